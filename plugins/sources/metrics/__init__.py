"""`metrics-data-source`: one HTTP GET of an endpoint's Prometheus `/metrics` per tick."""

from plugins.sources.metrics.source import (
    MetricsDataSource,
    MetricsSourceParameters,
    PrometheusDataSource,
)

__all__ = ["MetricsDataSource", "MetricsSourceParameters", "PrometheusDataSource"]
