"""Issue-3 plugins end to end over gRPC: the hose/filter custom-metrics pipeline, customMetrics,
/v1/models, non-uniform collection by selector, and an SGLang pod through engine selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from datalayer.config import ConfigError, load_config_text
from datalayer.registry import default_registry
from datalayer.v1 import datalayer_pb2 as pb
from mockpod.spec import PodSpec

from stack import Stack, eventually, running_stack

PIPELINE = """\
kind: DataLayerConfig
plugins:
- type: prometheus-data-source
  name: hose
- type: prometheus-metric
  name: capacity-waits
  parameters:
    spec: 'vllm:num_requests_waiting_by_reason{{reason="capacity"}}'
    key: waiting_capacity
- type: prometheus-metric
  name: preemptions
  parameters: {{metricName: "vllm:num_preemptions_total"}}
- type: prometheus-metric
  name: maybe
  parameters: {{metricName: "vllm:not_on_the_page", optional: true}}
- type: core-metrics-extractor
  parameters:
    engineConfigs:
    - name: vllm
      customMetrics:
      - {{attributeKey: running_sum, metricSpec: "vllm:num_requests_running"}}
- type: models-data-source
  parameters: {{}}
- type: models-data-extractor
- type: file-discovery
  parameters: {{path: {endpoints}, pollInterval: 50ms}}
dataLayer:
  interval: 50ms
  stalenessThreshold: 1s
  sources:
  - pluginRef: hose
    extractors:
    - pluginRef: core-metrics-extractor
    - pluginRef: capacity-waits
    - pluginRef: preemptions
    - pluginRef: maybe
  - pluginRef: models-data-source
    interval: 200ms
    extractors: [{{pluginRef: models-data-extractor}}]
  discovery: {{pluginRef: file-discovery}}
"""

PODS = (
    PodSpec(name="pod-a"),
    PodSpec(name="pod-b", loras=("sql-lora",), max_lora=1),
    PodSpec(name="pod-s", engine_type="sglang", model="Qwen/Qwen2.5-7B-Instruct"),
)


async def get(stack: Stack, name: str) -> pb.Endpoint:
    return await stack.client.get_endpoint(name)


async def test_custom_gauge_flows_from_pod_to_metrics_custom(tmp_path: Path) -> None:
    async with running_stack(tmp_path, PIPELINE, PODS) as stack:
        await stack.control(0, {"waiting": 6, "running": 4})

        async def arrived() -> bool:
            endpoint = await get(stack, "pod-a")
            custom = endpoint.metrics.custom
            both_sources_read = not endpoint.stale
            return both_sources_read and (
                custom.get("waiting_capacity"),
                custom.get("running_sum"),
            ) == (6.0, 4.0)

        await eventually(arrived, what="custom metrics of pod-a")
        endpoint = await get(stack, "pod-a")
        assert endpoint.metrics.custom["vllm:num_preemptions_total"] == 0.0
        assert "vllm:not_on_the_page" not in endpoint.metrics.custom  # optional: no error
        assert endpoint.last_error == ""
        assert endpoint.metrics.custom_update_time["waiting_capacity"].seconds > 0
        assert endpoint.metrics.waiting_queue_size == 6


async def test_sglang_pod_uses_its_engine_and_reports_missing_custom_metrics(
    tmp_path: Path,
) -> None:
    async with running_stack(tmp_path, PIPELINE, PODS) as stack:
        await stack.control(2, {"waiting": 3, "running": 2, "kv_cache_usage": 0.5})

        async def read() -> bool:
            endpoint = await get(stack, "pod-s")
            m = endpoint.metrics
            return not endpoint.stale and (m.waiting_queue_size, m.running_requests_size) == (3, 2)

        await eventually(read, what="sglang values")
        endpoint = await get(stack, "pod-s")
        assert endpoint.metrics.kv_cache_usage_percent == pytest.approx(0.5)
        # The vLLM-only filters are not optional: a per-field error, the pod stays fresh.
        assert not endpoint.stale
        assert "custom[waiting_capacity]: no usable series of" in endpoint.last_error
        assert "custom[vllm:num_preemptions_total]" in endpoint.last_error
        assert "running_sum" not in endpoint.last_error  # customMetrics are per engine (vllm)


async def test_models_attribute_lists_base_and_lora(tmp_path: Path) -> None:
    async with running_stack(tmp_path, PIPELINE, PODS) as stack:

        async def listed() -> bool:
            return "/v1/models" in (await get(stack, "pod-b")).attributes

        await eventually(listed, what="the /v1/models attribute")
        value = (await get(stack, "pod-b")).attributes["/v1/models"]
        assert value.WhichOneof("kind") == "object"
        models = [
            {k: (v.string_value if v.HasField("string_value") else None) for k, v in m.items()}
            for m in (item.struct_value.fields for item in value.object.list_value.values)
        ]
        base = PODS[1].model
        assert [{k: m[k] for k in ("id", "parent")} for m in models] == [
            {"id": base, "parent": None},
            {"id": "sql-lora", "parent": base},
        ]
        assert {(m["object"], m["owned_by"]) for m in models} == {("model", "vllm")}
        created = value.object.list_value.values[0].struct_value.fields["created"]
        assert created.number_value > 0
        assert value.update_time.seconds > 0


SELECTIVE = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
  name: vllm-metrics
- type: metrics-data-source
  name: sglang-metrics
- type: core-metrics-extractor
- type: prometheus-metric
  parameters: {{metricName: "sglang:num_queue_reqs", key: sglang_queue}}
- type: file-discovery
  parameters: {{path: {endpoints}, pollInterval: 50ms}}
dataLayer:
  sources:
  - pluginRef: vllm-metrics
    selector: llm-d.ai/engine-type=vllm
    extractors: [{{pluginRef: core-metrics-extractor}}]
  - pluginRef: sglang-metrics
    selector: llm-d.ai/engine-type=sglang
    extractors: [{{pluginRef: prometheus-metric}}]
  discovery: {{pluginRef: file-discovery}}
"""


async def test_sources_collect_only_the_endpoints_they_select(tmp_path: Path) -> None:
    async with running_stack(tmp_path, SELECTIVE, PODS) as stack:
        await stack.control(2, {"waiting": 5})
        await stack.control(0, {"waiting": 2})

        async def both() -> bool:
            s = await get(stack, "pod-s")
            a = await get(stack, "pod-a")
            return s.metrics.custom.get("sglang_queue") == 5.0 and a.metrics.waiting_queue_size == 2

        await eventually(both, what="each pod collected by its own source")
        s = await get(stack, "pod-s")
        a = await get(stack, "pod-a")
        assert not s.metrics.HasField("waiting_queue_size")  # the core extractor never saw pod-s
        assert "sglang_queue" not in a.metrics.custom
        assert not s.stale
        assert not a.stale
        lanes = {lane.source for lane in stack.app.collector.lane_states("pod-s")}
        assert lanes == {"sglang-metrics"}


@pytest.mark.parametrize(
    ("parameters", "path", "fragment"),
    [
        ("{}", "plugins[0].parameters.metricName", "give exactly one of metricName and spec"),
        ("{metricName: a, spec: b}", "plugins[0].parameters.metricName", "exactly one"),
        ("{spec: 'x{a=1}'}", "plugins[0].parameters.spec", ""),
        ("{metricName: 'x{a=\"1\"}'}", "plugins[0].parameters.metricName", "a name only"),
        ("{metricName: x, key: ''}", "plugins[0].parameters.key", "must not be empty"),
    ],
)
def test_prometheus_metric_parameter_errors(parameters: str, path: str, fragment: str) -> None:
    text = (
        f"plugins:\n- type: prometheus-metric\n  parameters: {parameters}\n"
        "- type: prometheus-data-source\n- type: file-discovery\n  parameters: {path: e}\n"
        "dataLayer:\n  sources:\n  - pluginRef: prometheus-data-source\n"
        "    extractors: [{pluginRef: prometheus-metric}]\n"
        "  discovery: {pluginRef: file-discovery}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(text, default_registry(), file="c.yaml")
    assert info.value.path == path
    assert fragment in info.value.message


def test_custom_metrics_parameter_errors() -> None:
    text = (
        "plugins:\n- type: core-metrics-extractor\n  parameters:\n    engineConfigs:\n"
        "    - name: vllm\n      customMetrics:\n"
        "      - {attributeKey: q, metricSpec: a}\n      - {attributeKey: q, metricSpec: b}\n"
        "- type: metrics-data-source\n- type: file-discovery\n  parameters: {path: e}\n"
        "dataLayer:\n  sources:\n  - pluginRef: metrics-data-source\n"
        "    extractors: [{pluginRef: core-metrics-extractor}]\n"
        "  discovery: {pluginRef: file-discovery}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(text, default_registry(), file="c.yaml")
    assert info.value.path == "plugins[0].parameters.engineConfigs[0].customMetrics[1].attributeKey"
    assert "duplicate key 'q'" in info.value.message
