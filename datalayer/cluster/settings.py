"""The `cluster:` section of the configuration.

    cluster:
      self: 10.0.0.5:9002          # this replica as peers reach it ($POD_IP and the gRPC port)
      peers: [10.0.0.5:9002, 10.0.0.6:9002]   # a static list, or:
      peersDNS: datalayer-peers.ns.svc:9002   # every address the name resolves to
      mode: sharded                # or `full`: every replica collects every endpoint
      grace: 2s                    # unreachable this long: a peer leaves (stalenessThreshold)

Kept apart from the collector's settings: a group changes who collects, not how.
"""

from __future__ import annotations

import os
from typing import Literal

import msgspec

from datalayer.parameters import Duration, Parameters


class ClusterSettings(Parameters):
    self_address: str | None = msgspec.field(default=None, name="self")
    peers: list[str] = []
    peers_dns: str | None = msgspec.field(default=None, name="peersDNS")
    #: DNS servers (`ip` or `ip:port`) to resolve `peersDNS` with; empty: the system's.
    dns_servers: list[str] = []
    mode: Literal["sharded", "full"] = "sharded"
    #: How long a peer may be unreachable before it leaves; None: the staleness threshold.
    grace: Duration | None = None
    #: How often `peersDNS` is resolved again.
    dns_refresh: Duration = 1.0

    def problem(self) -> tuple[str, str] | None:
        """(path below `cluster`, why) for a section that cannot work, else None."""
        if self.peers and self.peers_dns:
            return "peersDNS", "use either `peers` or `peersDNS`, not both"
        if self.mode == "sharded" and not self.peers and not self.peers_dns:
            return "peers", "a sharded group needs `peers` or `peersDNS`"
        for i, peer in enumerate(self.peers):
            if not _is_host_port(peer):
                return f"peers[{i}]", f"expected host:port, got {peer!r}"
        if self.peers_dns and not _is_host_port(self.peers_dns):
            return "peersDNS", f"expected name:port, got {self.peers_dns!r}"
        if self.self_address is not None and not _is_host_port(self.self_address):
            return "self", f"expected host:port, got {self.self_address!r}"
        if self.grace is not None and self.grace <= 0:
            return "grace", "must be positive"
        if self.dns_refresh <= 0:
            return "dnsRefresh", "must be positive"
        return None

    def resolve_self(self, grpc_port: int) -> str:
        """This member's address: `self`, else $POD_IP (or 127.0.0.1) and the gRPC port."""
        if self.self_address:
            return self.self_address
        return f"{os.environ.get('POD_IP') or '127.0.0.1'}:{grpc_port}"


def _is_host_port(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)
