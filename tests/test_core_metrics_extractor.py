"""`core-metrics-extractor` on real page formats, through the selective scanner."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import decode
from datalayer.plugin import ParameterError
from plugins.extractors.core_metrics.extractor import (
    BUILTIN_ENGINES,
    CoreMetricsExtractor,
    CoreMetricsParameters,
    EngineConfig,
)
from plugins.shared.prometheus.samples import MetricSamples, Sample
from plugins.shared.prometheus.scan import SelectiveScanner

from promfixtures import Lora, VllmPage, vllm_page

POD = EndpointSpec("pod-a", "10.0.0.1", 8000)


def make(**params: Any) -> CoreMetricsExtractor:
    return CoreMetricsExtractor("core-metrics-extractor", CoreMetricsParameters(**params))


def run(
    body: bytes, endpoint: EndpointSpec = POD, extractor: CoreMetricsExtractor | None = None
) -> EndpointUpdate:
    extractor = extractor or make()
    out = EndpointUpdate()
    extractor.extract(SelectiveScanner(extractor.required_names()).scan(body), endpoint, out)
    return out


def labelled(engine: str, key: str = "llm-d.ai/engine-type") -> EndpointSpec:
    return EndpointSpec("pod-a", "10.0.0.1", 8000, labels={key: engine})


def error_fields(out: EndpointUpdate) -> set[str]:
    return {error.split(":", 1)[0] for error in out.errors}


# --- vLLM ---------------------------------------------------------------------------------


def test_vllm_page_all_fields() -> None:
    out = run(vllm_page(VllmPage(waiting=(3,), running=(5,), kv=(0.42,))))
    assert out.errors == []
    assert out.metrics == {
        "waiting_queue_size": 3,
        "running_requests_size": 5,
        "kv_cache_usage_percent": 0.42,
        "active_models": (),
        "waiting_models": (),
        "max_active_models": 0,
        "cache_block_size": 16,
        "cache_num_blocks": 4096,
    }
    assert isinstance(out.metrics["waiting_queue_size"], int)


def test_legacy_kv_name_is_a_fallback() -> None:
    page = VllmPage(kv=(0.7,), kv_names=("vllm:gpu_cache_usage_perc",))
    out = run(vllm_page(page))
    assert out.metrics["kv_cache_usage_percent"] == 0.7
    assert out.errors == []


def test_both_kv_names_newer_wins() -> None:
    page = VllmPage(
        kv=(0.2,),
        legacy_kv=(0.9,),
        kv_names=("vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc"),
    )
    assert run(vllm_page(page)).metrics["kv_cache_usage_percent"] == 0.2


def test_newer_kv_name_all_nan_falls_back_to_older() -> None:
    page = VllmPage(
        kv=(math.nan,),
        legacy_kv=(0.9,),
        kv_names=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    )
    assert run(vllm_page(page)).metrics["kv_cache_usage_percent"] == 0.9


def test_data_parallel_engines_sum_counts_and_average_kv() -> None:
    page = VllmPage(waiting=(1, 2, 4), running=(3, 4, 0), kv=(0.1, 0.3, 0.5))
    out = run(vllm_page(page))
    assert out.metrics["waiting_queue_size"] == 7
    assert out.metrics["running_requests_size"] == 7
    assert out.metrics["kv_cache_usage_percent"] == pytest.approx(0.3)
    assert out.errors == []


def test_nan_series_are_skipped() -> None:
    page = VllmPage(waiting=(math.nan, 2), running=(1, math.inf), kv=(math.nan, 0.4))
    out = run(vllm_page(page))
    assert out.metrics["waiting_queue_size"] == 2
    assert out.metrics["running_requests_size"] == 1
    assert out.metrics["kv_cache_usage_percent"] == 0.4
    assert out.errors == []


def test_all_nan_is_an_error_for_that_field_only() -> None:
    out = run(vllm_page(VllmPage(kv=(math.nan,))))
    assert error_fields(out) == {"kv_cache_usage_percent"}
    assert "kv_cache_usage_percent" not in out.metrics
    assert "vllm:kv_cache_usage_perc" in out.errors[0]
    assert out.metrics["waiting_queue_size"] == 3


def test_missing_waiting_family_is_an_error_for_that_field_only() -> None:
    out = run(vllm_page(VllmPage(omit=frozenset({"vllm:num_requests_waiting"}))))
    assert error_fields(out) == {"waiting_queue_size"}
    assert "vllm:num_requests_waiting" in out.errors[0]
    assert "waiting_queue_size" not in out.metrics
    assert out.metrics["running_requests_size"] == 5
    assert out.metrics["kv_cache_usage_percent"] == 0.42


def test_waiting_by_reason_is_not_mistaken_for_waiting() -> None:
    out = run(vllm_page(VllmPage(waiting=(0,), omit=frozenset())))
    assert out.metrics["waiting_queue_size"] == 0


def test_lora_largest_value_wins_adapters_sorted_and_trimmed() -> None:
    page = VllmPage(
        lora=(
            Lora("old", "", 2, 1_757_846_100.0),
            Lora(" sql-lora , chat-lora,,", "b ,a", 4, 1_757_846_125.0),
            Lora("middle", "", 3, 1_757_846_110.0),
        )
    )
    out = run(vllm_page(page))
    assert out.metrics["active_models"] == ("chat-lora", "sql-lora")
    assert out.metrics["waiting_models"] == ("a", "b")
    assert out.metrics["max_active_models"] == 4
    assert out.errors == []


def test_absent_lora_family_means_no_adapters_not_an_error() -> None:
    out = run(vllm_page(VllmPage(lora=())))
    assert out.metrics["active_models"] == ()
    assert out.metrics["waiting_models"] == ()
    assert out.metrics["max_active_models"] == 0
    assert out.errors == []


def test_absent_lora_defaults_are_not_readings() -> None:
    """The "no adapters" default is stored, but a page holding only it read nothing."""
    out = run(b"vllm:num_requests_waiting 2\n")
    assert out.metrics["max_active_models"] == 0
    assert out.readings == 1  # the queue; not the three LoRA defaults


@pytest.mark.parametrize(
    "page",
    [
        b"process_cpu_seconds_total 12.5\n",
        b"# HELP vllm:num_requests_waiting Waiting.\n# TYPE vllm:num_requests_waiting gauge\n"
        b"# HELP vllm:lora_requests_info Running stats on lora requests.\n"
        b"# TYPE vllm:lora_requests_info gauge\n",
    ],
    ids=["unrelated-metrics", "help-type-only"],
)
def test_a_page_with_no_wanted_sample_reads_nothing(page: bytes) -> None:
    out = run(page)
    assert out.readings == 0


def test_a_real_page_is_readings() -> None:
    out = run(vllm_page(VllmPage(waiting=(3,), running=(5,), kv=(0.42,))))
    assert out.readings >= 3


def test_lora_with_only_nan_series_is_an_error() -> None:
    out = run(vllm_page(VllmPage(lora=(Lora("a", "", 1, math.nan),))))
    assert error_fields(out) == {"active_models", "waiting_models", "max_active_models"}


def test_lora_bad_max_lora_is_an_error_for_that_field_only() -> None:
    body = b'vllm:lora_requests_info{max_lora="many",running_lora_adapters="x"} 5\n'
    out = run(body)
    assert out.metrics["active_models"] == ("x",)
    assert "max_active_models" in error_fields(out)
    assert "max_active_models" not in out.metrics


def test_absent_cache_info_leaves_fields_unset_without_error() -> None:
    out = run(vllm_page(VllmPage(block_size=None)))
    assert "cache_block_size" not in out.metrics
    assert "cache_num_blocks" not in out.metrics
    assert out.errors == []


def test_cache_info_with_a_non_integer_label_is_an_error() -> None:
    body = b'vllm:cache_config_info{block_size="16",num_gpu_blocks="None"} 1\n'
    out = run(body)
    assert out.metrics["cache_block_size"] == 16
    assert error_fields(out) >= {"cache_num_blocks"}
    assert any("num_gpu_blocks" in error for error in out.errors)


# --- other engines and engine selection ------------------------------------------------------

SGLANG = b"""\
# HELP sglang:num_queue_reqs The number of requests in the waiting queue
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="qwen",tp_rank="0"} 6.0
sglang:num_queue_reqs{model_name="qwen",tp_rank="1"} 1.0
sglang:num_running_reqs{model_name="qwen",tp_rank="0"} 2.0
sglang:token_usage{model_name="qwen",tp_rank="0"} 0.5
sglang:token_usage{model_name="qwen",tp_rank="1"} 0.7
sglang:cache_config_info{model_name="qwen",num_pages="9000",page_size="1"} 1.0
vllm:num_requests_waiting{engine="0"} 99
"""

TRTLLM = b"""\
trtllm_num_requests_waiting 4
trtllm_num_requests_running 3
trtllm_kv_cache_utilization 0.25
trtllm_kv_cache_tokens_per_block 32
trtllm_kv_cache_max_blocks 2048
"""

TRITON = b"""\
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="waiting",version="1"} 8
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="scheduled",version="1"} 2
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="context",version="1"} 1
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction",model="tensorrt_llm"} 0.125
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="tokens_per",model="tensorrt_llm"} 64
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max",model="tensorrt_llm"} 1000
nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used",model="tensorrt_llm"} 125
"""


@pytest.mark.parametrize(
    ("engine", "body", "expected"),
    [
        ("sglang", SGLANG, (7, 2, 0.6, 1, 9000)),
        ("trtllm-serve", TRTLLM, (4, 3, 0.25, 32, 2048)),
        ("triton-tensorrt-llm", TRITON, (8, 2, 0.125, 64, 1000)),
        ("triton", TRITON, (8, 2, 0.125, 64, 1000)),  # upstream's engine-type value
    ],
)
def test_other_engines_by_label(
    engine: str, body: bytes, expected: tuple[int, int, float, int, int]
) -> None:
    out = run(body, labelled(engine))
    got = out.metrics
    assert out.errors == []
    waiting, running, kv, block, blocks = expected
    assert got["waiting_queue_size"] == waiting
    assert got["running_requests_size"] == running
    assert got["kv_cache_usage_percent"] == pytest.approx(kv)
    assert (got["cache_block_size"], got["cache_num_blocks"]) == (block, blocks)
    assert "active_models" not in got  # no LoRA spec for these engines


def test_upstream_engine_label_is_a_fallback() -> None:
    out = run(SGLANG, labelled("sglang", "inference.networking.k8s.io/engine-type"))
    assert out.metrics["waiting_queue_size"] == 7


def test_configured_label_key_wins_over_fallback() -> None:
    endpoint = EndpointSpec(
        "pod-a",
        "10.0.0.1",
        8000,
        labels={"engine": "sglang", "inference.networking.k8s.io/engine-type": "vllm"},
    )
    out = run(SGLANG, endpoint, make(engine_label_key="engine"))
    assert out.metrics["waiting_queue_size"] == 7


@pytest.mark.parametrize("engine", [None, "unknown-engine"])
def test_unlabelled_or_unknown_engine_uses_default(engine: str | None) -> None:
    endpoint = POD if engine is None else labelled(engine)
    assert run(SGLANG, endpoint).metrics["waiting_queue_size"] == 99
    sglang_default = make(default_engine="sglang")
    assert run(SGLANG, endpoint, sglang_default).metrics["waiting_queue_size"] == 7


def test_required_names_cover_every_engine() -> None:
    names = make().required_names()
    assert {
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        "vllm:lora_requests_info",
        "vllm:cache_config_info",
        "sglang:num_queue_reqs",
        "trtllm_kv_cache_max_blocks",
        "nv_trt_llm_request_metrics",
    } <= names
    assert "vllm:num_requests_waiting_by_reason" not in names


# --- configuration -------------------------------------------------------------------------


def test_override_keeps_unset_fields_and_empty_disables() -> None:
    extractor = make(
        engine_configs=[EngineConfig("vllm", lora_spec="", queued_requests_spec="my_queue")]
    )
    body = vllm_page(VllmPage(lora=(Lora("a", "", 1, 5.0),))) + b'my_queue{x="1"} 11\n'
    out = run(body, extractor=extractor)
    assert out.metrics["waiting_queue_size"] == 11
    assert out.metrics["kv_cache_usage_percent"] == 0.42
    assert "active_models" not in out.metrics
    assert "vllm:lora_requests_info" not in extractor.required_names()


def test_new_engine_with_label_spec_and_custom_cache_labels() -> None:
    extractor = make(
        engine_configs=[
            EngineConfig(
                "my-engine",
                queued_requests_spec='queue{kind="waiting"}',
                cache_info_spec="cfg_info",
                cache_block_size_label_name="bs",
                cache_num_blocks_label_name="nb",
            )
        ]
    )
    body = b'queue{kind="waiting"} 5\nqueue{kind="running"} 9\ncfg_info{bs="8",nb="10"} 1\n'
    out = run(body, labelled("my-engine"), extractor)
    assert out.metrics == {"waiting_queue_size": 5, "cache_block_size": 8, "cache_num_blocks": 10}
    assert out.errors == []


def test_parameters_decode_from_camel_case_yaml() -> None:
    params = decode(
        CoreMetricsParameters,
        {
            "engineLabelKey": "engine",
            "defaultEngine": "sglang",
            "engineConfigs": [
                {"name": "vllm", "kvUsageSpec": "vllm:kv_cache_usage_perc", "loraSpec": ""},
                {"name": "x", "queuedRequestsSpec": "q", "cacheBlockSizeLabelName": "bs"},
            ],
        },
    )
    extractor = CoreMetricsExtractor("core", params)
    assert extractor.default.name == "sglang"
    assert extractor.engines["x"].cache_block_size_label == "bs"
    assert extractor.engines["vllm"].lora == ()


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"default_engine": "nope"}, "defaultEngine", "unknown engine 'nope'"),
        ({"engine_label_key": ""}, "engineLabelKey", "must not be empty"),
        ({"engine_configs": [EngineConfig("")]}, "engineConfigs[0].name", "must not be empty"),
        ({"engine_configs": [EngineConfig("default")]}, "engineConfigs[0].name", "reserved"),
        (
            {"engine_configs": [EngineConfig("a"), EngineConfig("b"), EngineConfig("a")]},
            "engineConfigs[2].name",
            "duplicate engine 'a' (also engineConfigs[0])",
        ),
        (
            {"engine_configs": [EngineConfig("vllm"), EngineConfig("x", kv_usage_spec="k{a=1}")]},
            "engineConfigs[1].kvUsageSpec",
            "expected a quoted label value",
        ),
        (
            {"engine_configs": [EngineConfig("x", running_requests_spec='r{a!="1"}')]},
            "engineConfigs[0].runningRequestsSpec",
            "only exact-match",
        ),
        (
            {"engine_configs": [EngineConfig("x", cache_num_blocks_label_name="a-b")]},
            "engineConfigs[0].cacheNumBlocksLabelName",
            "invalid label name",
        ),
    ],
)
def test_invalid_parameters(params: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ParameterError) as caught:
        make(**params)
    assert caught.value.field == field
    assert message in caught.value.message


def test_builtin_table_has_the_brief_engines() -> None:
    assert set(BUILTIN_ENGINES) == {
        "vllm",
        "sglang",
        "trtllm-serve",
        "triton-tensorrt-llm",
        "triton",
    }


# --- robustness ----------------------------------------------------------------------------

_FIELD_NAMES = sorted(make().required_names())
_odd_values = st.one_of(
    st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1.0, 0.5])
)
_odd_labels = st.dictionaries(
    st.sampled_from(
        ["max_lora", "running_lora_adapters", "waiting_lora_adapters", "block_size",
         "num_gpu_blocks", "page_size", "num_pages", "request_type", "kv_cache_block_type"]
    ),
    st.one_of(st.text(max_size=6), st.sampled_from(["1", "16.0", "nan", "inf", "1e400", ","])),
)  # fmt: skip


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(_FIELD_NAMES),
        st.lists(st.builds(Sample, _odd_labels, _odd_values), max_size=3),
    ),
    st.sampled_from([None, *BUILTIN_ENGINES, "other"]),
)
def test_extract_never_raises(samples: dict[str, list[Sample]], engine: str | None) -> None:
    out = EndpointUpdate()
    endpoint = POD if engine is None else labelled(engine)
    make().extract(MetricSamples(samples), endpoint, out)
    for value in out.metrics.values():
        assert not (isinstance(value, float) and math.isnan(value))
