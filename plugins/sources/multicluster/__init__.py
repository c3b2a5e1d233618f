"""`multicluster-metrics-data-source`: a peer cluster's EPP pool metrics, over verified HTTPS."""

from plugins.sources.multicluster.source import (
    MulticlusterMetricsDataSource,
    MulticlusterSourceParameters,
)

__all__ = ["MulticlusterMetricsDataSource", "MulticlusterSourceParameters"]
