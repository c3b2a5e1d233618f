"""Prometheus text exposition: the selective scanner, its payload type and metric specs."""

from plugins.shared.prometheus.samples import MetricSamples, Sample
from plugins.shared.prometheus.scan import SelectiveScanner
from plugins.shared.prometheus.spec import MetricSpec

__all__ = ["MetricSamples", "MetricSpec", "Sample", "SelectiveScanner"]
