"""The extractor on page shapes real pods produce besides prometheus_client's own: the Go
simulator's formatting (llm-d inference simulator) and multiprocess ordering (`_sum` before
buckets, no `_created`, families unsorted). Checked against prometheus_client as the oracle."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from datalayer.model import EndpointSpec, EndpointUpdate
from plugins.extractors.core_metrics.extractor import CoreMetricsExtractor, CoreMetricsParameters
from plugins.shared.prometheus.scan import SelectiveScanner

# Lines are real page lines, so some run past the line limit.
# ruff: noqa: E501

# As the Go simulator writes it: one model_name label, `le` last, Go number formatting,
# `_sum` then `_count`, a LoRA info series whose value is a Go-formatted timestamp.
GO_SIMULATOR = b"""\
# HELP vllm:e2e_request_latency_seconds Histogram of end to end request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",le="0.3"} 0
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",le="1"} 3
vllm:e2e_request_latency_seconds_bucket{model_name="meta-llama/Llama-3.1-8B-Instruct",le="+Inf"} 4
vllm:e2e_request_latency_seconds_sum{model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.5
vllm:e2e_request_latency_seconds_count{model_name="meta-llama/Llama-3.1-8B-Instruct"} 4
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.3125
# HELP vllm:lora_requests_info Running stats on lora requests.
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="1",running_lora_adapters="",waiting_lora_adapters=""} 1.757846e+09
vllm:lora_requests_info{max_lora="1",running_lora_adapters="lora-a",waiting_lora_adapters="lora-b"} 1.757846125e+09
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="meta-llama/Llama-3.1-8B-Instruct"} 1
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0
"""

# Multiprocess mode: families out of order, `_sum` before buckets, no `_created`, two engines.
MULTIPROCESS = b"""\
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 12.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="m"} 3.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 9.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 9.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="1",model_name="m"} 4.0
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.25
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="1",model_name="m"} 3.0
vllm:num_requests_running{engine="0",model_name="m"} 1.0
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="4096"} 1.0
"""

EXTRACTOR = CoreMetricsExtractor("core", CoreMetricsParameters())
SCANNER = SelectiveScanner(EXTRACTOR.required_names())


def extract(page: bytes) -> EndpointUpdate:
    out = EndpointUpdate()
    EXTRACTOR.extract(SCANNER.scan(page), EndpointSpec("pod", "10.0.0.1", 8000), out)
    return out


def oracle(page: bytes, sample_name: str) -> list[float]:
    return [
        sample.value
        for family in text_string_to_metric_families(page.decode())
        for sample in family.samples
        if sample.name == sample_name
    ]


@pytest.mark.parametrize("page", [GO_SIMULATOR, MULTIPROCESS], ids=["go-simulator", "multiprocess"])
def test_scan_matches_the_oracle(page: bytes) -> None:
    samples = SCANNER.scan(page)
    for name in EXTRACTOR.required_names():
        assert [s.value for s in samples.get(name, [])] == oracle(page, name), name


def test_go_simulator_page() -> None:
    out = extract(GO_SIMULATOR)
    assert out.errors == []
    assert out.metrics["waiting_queue_size"] == 0
    assert out.metrics["running_requests_size"] == 1
    assert out.metrics["kv_cache_usage_percent"] == 0.3125  # the older name, as the simulator
    assert out.metrics["active_models"] == ("lora-a",)  # the largest timestamp wins
    assert out.metrics["waiting_models"] == ("lora-b",)
    assert out.metrics["max_active_models"] == 1


def test_multiprocess_page() -> None:
    out = extract(MULTIPROCESS)
    assert out.errors == []
    assert out.metrics["waiting_queue_size"] == 6
    assert out.metrics["running_requests_size"] == 4
    assert out.metrics["kv_cache_usage_percent"] == 0.375
    assert (out.metrics["cache_block_size"], out.metrics["cache_num_blocks"]) == (16, 4096)
    assert out.metrics["active_models"] == ()  # no LoRA family: no adapters, no error
