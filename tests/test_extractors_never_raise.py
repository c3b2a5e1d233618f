"""Bad payloads never raise out of an extractor: hypothesis feeds the Prometheus extractors
arbitrary samples for exactly the names they read (NaN, infinities, odd labels, several series)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from datalayer.model import METRIC_FIELDS, EndpointSpec, EndpointUpdate
from plugins.extractors.core_metrics.extractor import CoreMetricsExtractor, CoreMetricsParameters
from plugins.extractors.prometheus_metric.extractor import (
    PrometheusMetricExtractor,
    PrometheusMetricParameters,
)
from plugins.shared.prometheus.samples import MetricSamples, Sample

CORE = CoreMetricsExtractor("core", CoreMetricsParameters())
CUSTOM = PrometheusMetricExtractor(
    "custom", PrometheusMetricParameters(spec='vllm:num_requests_waiting{engine="0"}')
)
NAMES = sorted(CORE.required_names() | CUSTOM.required_names())
LABEL_KEYS = [
    "engine",
    "running_lora_adapters",
    "waiting_lora_adapters",
    "max_lora",
    "block_size",
    "num_gpu_blocks",
    "page_size",
    "num_pages",
    "request_type",
    "kv_cache_block_type",
]
ENGINES = ["vllm", "sglang", "trtllm-serve", "triton-tensorrt-llm", "unknown", ""]

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, 1e308, -1e308, float("nan")]),
)
labels = st.dictionaries(
    st.sampled_from(LABEL_KEYS),
    st.one_of(st.text(max_size=20), st.sampled_from(["0", "16", "1.5", "a, b ,,c", "None"])),
    max_size=4,
)
payloads = st.dictionaries(
    st.sampled_from(NAMES),
    st.lists(st.builds(Sample, labels, values), max_size=4),
    max_size=len(NAMES),
).map(MetricSamples)


@settings(max_examples=400, deadline=None)
@given(payloads, st.sampled_from(ENGINES))
def test_prometheus_extractors_never_raise(payload: MetricSamples, engine: str) -> None:
    endpoint = EndpointSpec("pod", "10.0.0.1", 8000, labels={"llm-d.ai/engine-type": engine})
    out = EndpointUpdate()
    CORE.extract(payload, endpoint, out)
    CUSTOM.extract(payload, endpoint, out)
    assert set(out.metrics) <= METRIC_FIELDS
    for name in ("waiting_queue_size", "running_requests_size", "max_active_models"):
        if name in out.metrics:
            assert isinstance(out.metrics[name], int)
    kv = out.metrics.get("kv_cache_usage_percent")
    assert kv is None or kv == kv  # never NaN: NaN series are skipped, not averaged in
    for key, value in out.custom.items():
        assert value == value, key
