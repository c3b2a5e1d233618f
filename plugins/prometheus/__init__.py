"""Prometheus text exposition: the selective scanner, its payload type and metric specs."""

from plugins.prometheus.samples import MetricSamples, Sample
from plugins.prometheus.scan import SelectiveScanner
from plugins.prometheus.spec import MetricSpec

__all__ = ["MetricSamples", "MetricSpec", "Sample", "SelectiveScanner"]
