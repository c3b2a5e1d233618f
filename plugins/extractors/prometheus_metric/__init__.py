"""`prometheus-metric`: one named metric into `metrics.custom` (the docs' "filter")."""

from plugins.extractors.prometheus_metric.extractor import (
    PrometheusMetricExtractor,
    PrometheusMetricParameters,
)

__all__ = ["PrometheusMetricExtractor", "PrometheusMetricParameters"]
