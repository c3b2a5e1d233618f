"""`dcgm-extractor`: the busiest of a pod's GPUs, as the attribute `GPUUtilization` (0..1).

`DCGM_FI_DEV_GPU_UTIL` is a percentage per GPU. A pod with tensor parallelism holds several
GPUs and is as loaded as its busiest one, so the maximum is taken (upstream's rule), then
divided by 100. A DaemonSet exporter's page lists every GPU of the node, each labelled with
the `pod` (and `namespace`) it is allocated to: only the endpoint's own are read. A series
without a `pod` label (a sidecar's page, or an exporter without Kubernetes mapping) counts
as the endpoint's, unless the page names pods on other series (then an unlabelled GPU is
an unallocated one; upstream counts it for every pod). A NaN series is skipped; no usable
series is an error for the attribute.
"""

from __future__ import annotations

import math
from typing import ClassVar, Final

from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import Parameters
from datalayer.plugin import Extractor
from plugins.shared.prometheus.samples import MetricSamples

GPU_UTIL_METRIC: Final = "DCGM_FI_DEV_GPU_UTIL"
#: Upstream's attribute key.
GPU_UTILIZATION: Final = "GPUUtilization"


class DcgmExtractorParameters(Parameters):
    """No parameters (upstream's has none)."""


class DcgmExtractor(Extractor):
    type_name = "dcgm-extractor"
    description: ClassVar[str] = (
        "max DCGM_FI_DEV_GPU_UTIL over the pod's GPUs / 100 -> GPUUtilization"
    )
    Parameters = DcgmExtractorParameters
    input_type = MetricSamples

    def required_names(self) -> frozenset[str]:
        return frozenset({GPU_UTIL_METRIC})

    def produced_attributes(self) -> frozenset[str]:
        return frozenset({GPU_UTILIZATION})

    def extract(self, payload: MetricSamples, endpoint: EndpointSpec, out: EndpointUpdate) -> None:
        cap = payload.caps.get(GPU_UTIL_METRIC)
        if cap is not None:
            out.error(GPU_UTILIZATION, f"{GPU_UTIL_METRIC}: {cap}")
            return
        samples = payload.get(GPU_UTIL_METRIC)
        if not samples:
            out.error(GPU_UTILIZATION, f"{GPU_UTIL_METRIC} is not on the page")
            return
        pod = endpoint.pod_name or endpoint.name
        # On a node's page (some series name a pod), an unlabelled GPU is nobody's.
        per_pod = any(sample.labels.get("pod") for sample in samples)
        namespace = endpoint.namespace
        busiest: float | None = None
        for sample in samples:
            labels = sample.labels
            owner = labels.get("pod")
            if (owner or per_pod) and owner != pod:
                continue
            if namespace and labels.get("namespace") not in (None, "", namespace):
                continue
            if math.isnan(sample.value):
                continue
            busiest = sample.value if busiest is None else max(busiest, sample.value)
        if busiest is None:
            out.error(GPU_UTILIZATION, f"{GPU_UTIL_METRIC} has no series for pod {pod!r}")
            return
        out.set_attribute(GPU_UTILIZATION, min(max(busiest / 100.0, 0.0), 1.0))
