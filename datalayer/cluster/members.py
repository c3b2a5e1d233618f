"""Who the group's members are: a static list, or every address a DNS name resolves to.

A headless Kubernetes Service answers with the ready pods' addresses, so the
name is resolved again every `dnsRefresh`; a failed or empty answer keeps the
last good set (a DNS blip must not dissolve the group). Liveness is judged
separately, per peer, from its stream (see peer.py).
"""

from __future__ import annotations

import logging

import dns.asyncresolver
import dns.exception
import dns.resolver

from datalayer.cluster.settings import ClusterSettings

log = logging.getLogger("datalayer.cluster")


class MemberSource:
    """The configured member addresses (`host:port`), this replica's own among them."""

    def __init__(self, settings: ClusterSettings, me: str) -> None:
        self.settings = settings
        self.me = me
        self._last: set[str] = {me, *settings.peers}

    @property
    def dynamic(self) -> bool:
        return bool(self.settings.peers_dns)

    async def current(self) -> set[str]:
        if not self.settings.peers_dns:
            return set(self._last)
        host, _, port = self.settings.peers_dns.rpartition(":")
        try:
            addresses = await self._resolve(host)
        except (dns.exception.DNSException, OSError) as exc:
            log.warning("peersDNS %s: %s; keeping %d members", host, exc, len(self._last))
            return set(self._last)
        if addresses:
            self._last = {self.me, *(_join(a, port) for a in addresses)}
        return set(self._last)

    async def _resolve(self, host: str) -> list[str]:
        resolver = dns.asyncresolver.Resolver(configure=not self.settings.dns_servers)
        if self.settings.dns_servers:
            servers = [
                s.rpartition(":") if s.count(":") == 1 else (s, "", "53")
                for s in self.settings.dns_servers
            ]
            resolver.nameservers = [s[0] for s in servers]
            resolver.port = int(servers[0][2])
        resolver.lifetime = 1.0
        found: list[str] = []
        for kind in ("A", "AAAA"):
            try:
                answer = await resolver.resolve(host, kind)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            found += [record.to_text() for record in answer]
        return sorted(found)


def _join(address: str, port: str) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
