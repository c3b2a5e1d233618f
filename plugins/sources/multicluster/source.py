"""`multicluster-metrics-data-source`: `metrics-data-source` for cluster endpoints.

In upstream's multicluster mode a hub picker's endpoints are whole clusters (found by
`multicluster-file-discovery`), and what it scrapes is each peer EPP's pool aggregates. The
peers are reached across networks, so the defaults are https with certificate verification
(unlike pods on a cluster network) and a smaller body cap (8 MiB; an EPP page is small).
A peer may publish its metrics apart from its routable address with the endpoint labels
`metricsAddress` and `metricsPort` (default: the endpoint's port): upstream's MetricsHost.
A `port` parameter, when set, applies to every endpoint and wins over the label.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from datalayer.model import EndpointSpec
from datalayer.parameters import PositiveInt
from plugins.shared.http.aio import PollError
from plugins.sources.metrics.source import MetricsDataSource, MetricsSourceParameters

METRICS_ADDRESS_LABEL = "metricsAddress"
METRICS_PORT_LABEL = "metricsPort"


class MulticlusterSourceParameters(MetricsSourceParameters):
    scheme: Literal["http", "https"] = "https"
    max_body_bytes: PositiveInt = 8 * 1024 * 1024


class MulticlusterMetricsDataSource(MetricsDataSource):
    type_name = "multicluster-metrics-data-source"
    description = "a peer cluster's EPP /metrics (https, verified, 8 MiB; metricsAddress label)"
    Parameters = MulticlusterSourceParameters

    def target(self, endpoint: EndpointSpec) -> EndpointSpec:
        """Where `endpoint`'s metrics are: its metricsAddress/metricsPort labels, else itself."""
        address = endpoint.labels.get(METRICS_ADDRESS_LABEL)
        if not address:
            return endpoint
        port_text = endpoint.labels.get(METRICS_PORT_LABEL)
        port = endpoint.port
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise PollError(f"label {METRICS_PORT_LABEL}={port_text!r} is not a port")
            port = int(port_text)
        return dataclasses.replace(endpoint, address=address, port=port)
