"""The built-in plugins. Registered through the `datalayer.plugins` entry point, like any other.

Each plugin lives in its own package with a README; this module only lists them.
"""

from __future__ import annotations

from datalayer.registry import Registry


def register(registry: Registry) -> None:
    """Entry-point hook: add every built-in plugin type to `registry`."""
    from plugins.discovery.dns.discovery import DnsDiscovery
    from plugins.discovery.file.discovery import FileDiscovery
    from plugins.discovery.kubernetes import KubernetesPodDiscovery
    from plugins.discovery.multicluster import MulticlusterFileDiscovery
    from plugins.extractors.core_metrics.extractor import CoreMetricsExtractor
    from plugins.extractors.dcgm import DcgmExtractor
    from plugins.extractors.json.extractor import JsonExtractor
    from plugins.extractors.kv_block_index.extractor import KvBlockIndexExtractor
    from plugins.extractors.models import ModelsDataExtractor
    from plugins.extractors.multicluster import MulticlusterMetricsExtractor
    from plugins.extractors.prometheus_metric.extractor import PrometheusMetricExtractor
    from plugins.extractors.topology import TopologyExtractor
    from plugins.sources.dcgm import DcgmDataSource
    from plugins.sources.file.source import FileDataSource
    from plugins.sources.kv_events.source import KvEventsDataSource
    from plugins.sources.metrics.source import MetricsDataSource, PrometheusDataSource
    from plugins.sources.models import ModelsDataSource
    from plugins.sources.multicluster import MulticlusterMetricsDataSource
    from plugins.sources.notifications import EndpointNotificationSource, K8sNotificationSource
    from plugins.sources.push.source import HttpPushDataSource
    from plugins.sources.unix_socket.source import UnixSocketDataSource

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
        KvEventsDataSource,
        KvBlockIndexExtractor,
        FileDiscovery,
        DnsDiscovery,
        KubernetesPodDiscovery,
        DcgmDataSource,
        DcgmExtractor,
        TopologyExtractor,
        EndpointNotificationSource,
        K8sNotificationSource,
        MulticlusterMetricsDataSource,
        MulticlusterMetricsExtractor,
        MulticlusterFileDiscovery,
    ):
        registry.register(cls)
