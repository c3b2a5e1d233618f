"""`multicluster-metrics-extractor`: a cluster endpoint's pool aggregates as attributes.

A cluster endpoint has no engine metrics of its own (the typed queue / KV fields stay
absent); what the hub's multicluster scorers read is the peer EPP's pool averages, under
upstream's attribute keys. Each metric is a spec (`name{label="value"}`), so a peer EPP
serving several pools is read for the right one. Several matching series are averaged
(they are averages already); NaN is skipped; a missing metric is an error for its
attribute only, and the other is still read.
"""

from __future__ import annotations

import math
from typing import ClassVar, Final

from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import Parameters
from datalayer.plugin import Extractor, ParameterError
from plugins.shared.prometheus.samples import MetricSamples
from plugins.shared.prometheus.spec import MetricSpec

KV_CACHE_ATTRIBUTE: Final = "llm-d.ai/multicluster-kv-cache-utilization"
QUEUE_ATTRIBUTE: Final = "llm-d.ai/multicluster-queue-size"


class MulticlusterExtractorParameters(Parameters):
    kv_cache_utilization_metric: str = "llm_d_epp_average_kv_cache_utilization"
    queue_size_metric: str = "llm_d_epp_average_queue_size"


class MulticlusterMetricsExtractor(Extractor):
    type_name = "multicluster-metrics-extractor"
    description: ClassVar[str] = "a peer pool's average KV-cache use and queue size -> attributes"
    Parameters = MulticlusterExtractorParameters
    input_type = MetricSamples

    def __init__(self, name: str, params: MulticlusterExtractorParameters) -> None:
        super().__init__(name, params)
        self.specs: list[tuple[str, MetricSpec]] = []
        for field, key, text in (
            ("kvCacheUtilizationMetric", KV_CACHE_ATTRIBUTE, params.kv_cache_utilization_metric),
            ("queueSizeMetric", QUEUE_ATTRIBUTE, params.queue_size_metric),
        ):
            try:
                self.specs.append((key, MetricSpec.parse(text)))
            except ValueError as exc:
                raise ParameterError(field, str(exc)) from None

    def required_names(self) -> frozenset[str]:
        return frozenset(spec.name for _, spec in self.specs)

    def produced_attributes(self) -> frozenset[str]:
        return frozenset(key for key, _ in self.specs)

    def extract(self, payload: MetricSamples, endpoint: EndpointSpec, out: EndpointUpdate) -> None:
        for key, spec in self.specs:
            cap = payload.caps.get(spec.name)
            if cap is not None:
                out.error(key, f"{spec.name}: {cap}")
                continue
            values = [
                s.value
                for s in payload.get(spec.name, ())
                if spec.matches(s.labels) and not math.isnan(s.value)
            ]
            if not values:
                out.error(key, f"no usable series for {spec}")
                continue
            out.set_attribute(key, sum(values) / len(values))
