"""`multicluster-file-discovery`: `file-discovery` whose endpoints are peer clusters.

Same file, same parameters, same reload rules; what differs is what an entry may be. A
cluster is reached through its gateway, so `address` may be a DNS host name as well as an
IP literal (checked: RFC 1123, at least one letter), and the `metricsAddress` /
`metricsPort` labels (read by `multicluster-metrics-data-source`) must be a host and a port.
An entry that breaks these rules is left out with a warning naming it; the rest load.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence

from datalayer.model import EndpointSpec
from datalayer.plugin import DiscoverySink
from plugins.discovery.file.discovery import FileDiscovery
from plugins.sources.multicluster.source import METRICS_ADDRESS_LABEL, METRICS_PORT_LABEL

log = logging.getLogger(__name__)

_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def is_host(text: str) -> bool:
    """An IP literal (v4 or v6) or an RFC 1123 host name with at least one letter."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        pass
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253 or not any(c.isalpha() for c in name):
        return False
    return all(_LABEL.fullmatch(part) for part in name.split("."))


def entry_problem(spec: EndpointSpec) -> str:
    """Why a cluster entry cannot be used, or ""."""
    if not is_host(spec.address):
        return f"address {spec.address!r} is not a host name or IP"
    metrics = spec.labels.get(METRICS_ADDRESS_LABEL)
    if metrics is not None and not is_host(metrics):
        return f"label {METRICS_ADDRESS_LABEL}={metrics!r} is not a host name or IP"
    port = spec.labels.get(METRICS_PORT_LABEL)
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        return f"label {METRICS_PORT_LABEL}={port!r} is not a port"
    return ""


class _CheckedSink:
    """Passes the file's entries on, leaving out (with a warning) those that are not clusters."""

    def __init__(self, sink: DiscoverySink, name: str) -> None:
        self._sink = sink
        self._name = name

    async def replace_all(self, specs: Sequence[EndpointSpec]) -> None:
        good = []
        for spec in specs:
            problem = entry_problem(spec)
            if problem:
                log.warning("%s: cluster %s left out: %s", self._name, spec.name, problem)
            else:
                good.append(spec)
        await self._sink.replace_all(good)

    async def upsert(self, spec: EndpointSpec) -> None:
        await self.replace_all([spec])  # pragma: no cover - file discovery only replaces

    async def delete(self, name: str) -> None:
        await self._sink.delete(name)  # pragma: no cover

    def mark_synced(self) -> None:
        self._sink.mark_synced()


class MulticlusterFileDiscovery(FileDiscovery):
    type_name = "multicluster-file-discovery"
    description = "peer clusters from a YAML file (host names allowed; metricsAddress/Port labels)"

    async def run(self, sink: DiscoverySink) -> None:
        await super().run(_CheckedSink(sink, self.name))
