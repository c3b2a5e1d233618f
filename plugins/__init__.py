"""The built-in plugins. Registered through the `datalayer.plugins` entry point, like any other.

Each plugin lives in its own package with a README; this module only lists them.
"""

from __future__ import annotations

from datalayer.registry import Registry


def register(registry: Registry) -> None:
    """Entry-point hook: add every built-in plugin type to `registry`."""
    from plugins.core_metrics.extractor import CoreMetricsExtractor
    from plugins.dns_discovery.discovery import DnsDiscovery
    from plugins.file_discovery.discovery import FileDiscovery
    from plugins.file_source.source import FileDataSource
    from plugins.json_extractor.extractor import JsonExtractor
    from plugins.kubernetes_discovery import KubernetesPodDiscovery
    from plugins.metrics_source.source import MetricsDataSource, PrometheusDataSource
    from plugins.models import ModelsDataExtractor, ModelsDataSource
    from plugins.prometheus_metric.extractor import PrometheusMetricExtractor
    from plugins.push_source.source import HttpPushDataSource
    from plugins.unix_socket_source.source import UnixSocketDataSource

    for cls in (
        MetricsDataSource,
        PrometheusDataSource,
        CoreMetricsExtractor,
        PrometheusMetricExtractor,
        ModelsDataSource,
        ModelsDataExtractor,
        UnixSocketDataSource,
        FileDataSource,
        HttpPushDataSource,
        JsonExtractor,
        FileDiscovery,
        DnsDiscovery,
        KubernetesPodDiscovery,
    ):
        registry.register(cls)
