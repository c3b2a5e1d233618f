"""The "filter" of the data-layer docs' custom-metrics pipeline.

The hose (`prometheus-data-source`) fetches the page; this extractor reads
one gauge or counter and stores it in the endpoint's `metrics.custom` map,
where a scheduler's metric scorer (the "consumer") reads it. Any metric on
the page can be used this way without code: name it in the YAML.
"""

from __future__ import annotations

from typing import ClassVar

from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import NonEmptyStr, Parameters
from datalayer.plugin import Extractor, ParameterError
from plugins.shared.prometheus.custom import read_custom
from plugins.shared.prometheus.samples import MetricSamples
from plugins.shared.prometheus.spec import MetricSpec


class PrometheusMetricParameters(Parameters):
    #: The sample name, e.g. `vllm:num_preemptions_total`; or give `spec` instead.
    metric_name: str | None = None
    #: A spec with exact-match labels, e.g. `vllm:request_success_total{finished_reason="stop"}`.
    spec: str | None = None
    #: The key in `metrics.custom`; defaults to the metric name.
    key: NonEmptyStr | None = None
    #: When true, a missing metric is not an error.
    optional: bool = False


class PrometheusMetricExtractor(Extractor):
    type_name = "prometheus-metric"
    description: ClassVar[str] = "one metric (summed over matching series) into metrics.custom"
    Parameters = PrometheusMetricParameters
    input_type = MetricSamples

    def __init__(self, name: str, params: PrometheusMetricParameters) -> None:
        super().__init__(name, params)
        if (params.metric_name is None) == (params.spec is None):
            raise ParameterError("metricName", "give exactly one of metricName and spec")
        field = "metricName" if params.metric_name is not None else "spec"
        text = params.metric_name if params.metric_name is not None else params.spec
        assert text is not None
        try:
            self.spec = MetricSpec.parse(text)
        except ValueError as exc:
            raise ParameterError(field, str(exc)) from None
        if params.metric_name is not None and self.spec.labels:
            raise ParameterError("metricName", "a name only: put label matchers in `spec`")
        self.key = params.key or self.spec.name
        self.optional = params.optional

    def required_names(self) -> frozenset[str]:
        return frozenset({self.spec.name})

    def extract(self, payload: MetricSamples, endpoint: EndpointSpec, out: EndpointUpdate) -> None:
        read_custom(payload, self.spec, self.key, self.optional, out)
