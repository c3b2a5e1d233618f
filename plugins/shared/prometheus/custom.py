"""Reading one custom scalar from a page: shared by `prometheus-metric` and `customMetrics`."""

from __future__ import annotations

import math

from datalayer.model import EndpointUpdate
from plugins.shared.prometheus.samples import MetricSamples
from plugins.shared.prometheus.spec import MetricSpec


def read_custom(
    samples: MetricSamples, spec: MetricSpec, key: str, optional: bool, out: EndpointUpdate
) -> None:
    """Sum every finite series `spec` selects into `metrics.custom[key]` (as counts are summed
    across data-parallel engines); no usable series is an error for that key unless optional.
    A value not read this tick keeps its old value and update time. A family that hit
    a scan cap (`MetricSamples.caps`) is an error naming the cap, optional or not: its
    kept series are incomplete, so their sum would under-report."""
    caps = samples.caps
    note = caps.get(spec.name) if caps else None
    if note is not None:
        out.error(f"custom[{key}]", f"{spec.name}: {note}")
        return
    total = 0.0
    found = False
    for sample in samples.get(spec.name, ()):
        if math.isfinite(sample.value) and spec.matches(sample.labels):
            total += sample.value
            found = True
    if found and math.isfinite(total):
        out.set_custom(key, total)
    elif not optional:
        out.error(f"custom[{key}]", f"no usable series of {spec}")
