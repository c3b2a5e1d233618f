"""Endpoints that follow a DNS name's answer set.

This is how `docker compose up --scale vllm=N` and Kubernetes headless
Services expose replicas: one name, one A/AAAA record per replica. Every
`refreshInterval` the name is resolved again and the endpoint set becomes
the answer set: new addresses are added, vanished ones removed, in order.

"The name does not exist" (NXDOMAIN, no answer) is an answer: zero replicas.
A failure to get an answer at all (timeout, unreachable server) is not: the
last good set is kept and the reason logged, so a DNS hiccup does not take
the fleet away from the schedulers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.resolver

from datalayer.model import EndpointSpec
from datalayer.parameters import Duration, NonEmptyStr, Parameters, Port, PositiveDuration
from datalayer.plugin import Discovery, DiscoverySink, ParameterError

log = logging.getLogger(__name__)

Family = Literal["any", "ipv4", "ipv6"]


class ResolveError(Exception):
    """No answer could be obtained; the last good set stays."""


class DnsDiscoveryParameters(Parameters):
    hostname: NonEmptyStr
    port: Port
    refresh_interval: PositiveDuration = 5.0
    #: Endpoint names are `<namePrefix>-<address>`; the host name by default.
    name_prefix: str | None = None
    namespace: str = ""
    labels: dict[str, str] = {}
    family: Family = "any"
    #: `ip` or `ip:port` of DNS servers to ask; empty uses the system resolver.
    nameservers: list[str] = []
    timeout: Duration = 2.0


def endpoint_name(prefix: str, address: str) -> str:
    """A stable, label-friendly name: IPv6 colons become dashes."""
    return f"{prefix}-{address.replace(':', '-')}"


class DnsDiscovery(Discovery):
    type_name = "dns-discovery"
    description = "one endpoint per A/AAAA record of a host name, re-resolved periodically"
    Parameters = DnsDiscoveryParameters

    def __init__(self, name: str, params: DnsDiscoveryParameters) -> None:
        super().__init__(name, params)
        self.params: DnsDiscoveryParameters = params
        self._servers = [
            _parse_server(text, f"nameservers[{i}]") for i, text in enumerate(params.nameservers)
        ]
        self.prefix = params.name_prefix or params.hostname

    async def run(self, sink: DiscoverySink) -> None:
        current: list[str] | None = None
        while True:
            try:
                addresses = await self.resolve()
            except ResolveError as exc:
                log.warning("dns-discovery %s: keeping the last good set: %s", self.name, exc)
            else:
                if addresses != current:
                    log.info("%s resolves to %d addresses", self.params.hostname, len(addresses))
                    await sink.replace_all([self._spec(a) for a in addresses])
                    current = addresses
            sink.mark_synced()
            await asyncio.sleep(self.params.refresh_interval)

    def _spec(self, address: str) -> EndpointSpec:
        p = self.params
        return EndpointSpec(
            endpoint_name(self.prefix, address), address, p.port, p.namespace, p.labels
        )

    async def resolve(self) -> list[str]:
        """The sorted answer set; ResolveError when there is no answer at all."""
        if self._servers:
            return await self._resolve_with_servers()
        return await self._resolve_system()

    async def _resolve_system(self) -> list[str]:
        family = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.params.timeout):
                infos = await loop.getaddrinfo(
                    self.params.hostname,
                    self.params.port,
                    family=family[self.params.family],
                    type=socket.SOCK_STREAM,
                )
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                return []
            raise ResolveError(f"{self.params.hostname}: {exc.strerror}") from None
        except TimeoutError:
            raise ResolveError(f"{self.params.hostname}: timed out") from None
        return sorted({str(info[4][0]) for info in infos})

    async def _resolve_with_servers(self) -> list[str]:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host for host, _ in self._servers]
        resolver.port = self._servers[0][1]
        resolver.lifetime = self.params.timeout
        kinds = {"any": ("A", "AAAA"), "ipv4": ("A",), "ipv6": ("AAAA",)}[self.params.family]
        addresses: set[str] = set()
        for kind in kinds:
            try:
                answer = await resolver.resolve(self.params.hostname, kind)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as exc:
                raise ResolveError(f"{self.params.hostname} {kind}: {exc}") from None
            addresses.update(record.to_text() for record in answer)
        return sorted(addresses)


def _parse_server(text: str, field_name: str) -> tuple[str, int]:
    """`ip`, `ip:port`, `v6`, `[v6]` or `[v6]:port`; the DNS port is 53 by default."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, "53"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ParameterError(field_name, f"expected ip, ip:port or [ipv6]:port, got {text!r}")
    return host, int(port)
