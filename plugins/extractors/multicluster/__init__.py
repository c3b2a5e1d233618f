"""`multicluster-metrics-extractor`: a peer pool's aggregate KV-cache use and queue size."""

from plugins.extractors.multicluster.extractor import (
    KV_CACHE_ATTRIBUTE,
    QUEUE_ATTRIBUTE,
    MulticlusterMetricsExtractor,
)

__all__ = ["KV_CACHE_ATTRIBUTE", "QUEUE_ATTRIBUTE", "MulticlusterMetricsExtractor"]
