"""`dcgm-data-source`: the DCGM exporter's Prometheus page, scraped per endpoint.

A declaration over the Prometheus scrape source: the same transport, scanner and payload
(`MetricSamples`), with upstream's DCGM defaults (port 9400, verification off, since the
exporter serves a self-signed certificate when it serves TLS at all). The one behaviour of
its own is `useNodeAddress`: the GPU Operator runs the exporter as a DaemonSet, one per node,
so the page is fetched from the endpoint's node address (a pod's `status.hostIP`) and the
extractor picks the endpoint's GPUs out of it by the `pod` label.
"""

from __future__ import annotations

import dataclasses

from datalayer.model import EndpointSpec
from datalayer.parameters import Duration, Port
from plugins.shared.http.aio import PollError
from plugins.sources.metrics.source import MetricsDataSource, MetricsSourceParameters

DCGM_EXPORTER_PORT = 9400


class DcgmSourceParameters(MetricsSourceParameters):
    #: The exporter's port (9400 is dcgm-exporter's default), not the model server's.
    port: Port | None = DCGM_EXPORTER_PORT
    insecure_skip_verify: bool = True
    #: Scrape the node's address (the DaemonSet exporter) instead of the pod's (a sidecar).
    use_node_address: bool = False
    #: How often to scrape when `dataLayer.sources[].interval` is unset (GPU counters
    #: change on the exporter's 30 s collect cycle by default; unset = the base tick).
    interval: Duration | None = None


class DcgmDataSource(MetricsDataSource):
    type_name = "dcgm-data-source"
    description = "the DCGM exporter's GPU metrics page (port 9400; useNodeAddress: the node's)"
    Parameters = DcgmSourceParameters

    def __init__(self, name: str, params: DcgmSourceParameters) -> None:
        super().__init__(name, params)
        self.use_node_address = params.use_node_address
        # Per instance: the `interval` parameter is this source's default tick.
        self.default_interval = params.interval  # type: ignore[misc]

    def target(self, endpoint: EndpointSpec) -> EndpointSpec:
        """Where the page is fetched for `endpoint`: itself, or its node with `useNodeAddress`."""
        if not self.use_node_address:
            return endpoint
        if not endpoint.node_address:
            raise PollError(f"useNodeAddress: endpoint {endpoint.name!r} has no node address")
        return dataclasses.replace(endpoint, address=endpoint.node_address)
