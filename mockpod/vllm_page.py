"""The vLLM V1 ``/metrics`` page: metric names, help texts, label sets and bucket bounds as
a recent vLLM registers them, in its registration order.

Only a handful of these lines matter to a scheduler; the rest are here because a scraper has
to get past them, which is what makes the page realistically large.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from mockpod.exposition import CounterFamily, Family, GaugeFamily, HistogramFamily, Page
from mockpod.page import EngineLoad, FinishedRequest, HttpExchange
from mockpod.runtime_families import HttpFamilies, process_families
from mockpod.spec import PodSpec

__all__ = ["VllmMetrics", "build_1_2_5_buckets"]

TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
TOKEN_LATENCY_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
ITERATION_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
N_BUCKETS = (1, 2, 5, 10, 20)
FINISH_REASONS = ("stop", "length", "abort", "error")
PROMPT_SOURCES = ("local_compute", "local_cache_hit", "external_kv_transfer")
WAITING_REASONS = ("capacity", "deferred")


def build_1_2_5_buckets(max_value: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to ``max_value``, as vLLM sizes its token histograms."""
    buckets: list[int] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return buckets
            buckets.append(value)
        exponent += 1


class VllmMetrics:
    """A vLLM pod's page; one series per engine (data-parallel rank) on every vllm: family."""

    def __init__(self, spec: PodSpec, started_at: float) -> None:
        self._spec = spec
        self._engines = range(spec.engines)
        self._created = started_at
        model = spec.model
        self._labels = [{"model_name": model, "engine": str(e)} for e in self._engines]

        self.running = self._gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches."
        )
        self.waiting = self._gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed."
        )
        self.waiting_by_reason = GaugeFamily(
            "vllm:num_requests_waiting_by_reason",
            "Number of requests waiting to be processed, by reason.",
        )
        for reason in WAITING_REASONS:
            for e in self._engines:
                self.waiting_by_reason.add((e, reason), {**self._labels[e], "reason": reason})
        self.kv_usage = self._gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."
        )
        self.prefix_queries = self._counter(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
        )
        self.prefix_hits = self._counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."
        )
        external_queries = self._counter(
            "vllm:external_prefix_cache_queries",
            "External prefix cache queries from KV connector cross-instance cache sharing, "
            "in terms of number of queried tokens.",
        )
        external_hits = self._counter(
            "vllm:external_prefix_cache_hits",
            "External prefix cache hits from KV connector cross-instance cache sharing, "
            "in terms of number of cached tokens.",
        )
        self.preemptions = self._counter(
            "vllm:num_preemptions", "Cumulative number of preemption from the engine."
        )
        self.prompt_tokens = self._counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed."
        )
        self.prompt_tokens_by_source = CounterFamily(
            "vllm:prompt_tokens_by_source", "Number of prompt tokens by source."
        )
        for source in PROMPT_SOURCES:
            for e in self._engines:
                self.prompt_tokens_by_source.add(
                    (e, source), {**self._labels[e], "source": source}, started_at
                )
        self.prompt_tokens_cached = self._counter(
            "vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external)."
        )
        self.generation_tokens = self._counter(
            "vllm:generation_tokens", "Number of generation tokens processed."
        )
        self.request_success = CounterFamily(
            "vllm:request_success", "Count of successfully processed requests."
        )
        for reason in FINISH_REASONS:
            for e in self._engines:
                self.request_success.add(
                    (e, reason), {**self._labels[e], "finished_reason": reason}, started_at
                )

        token_buckets = build_1_2_5_buckets(spec.max_model_len)
        self.h_prompt_tokens = self._histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", token_buckets
        )
        self.h_generation_tokens = self._histogram(
            "vllm:request_generation_tokens",
            "Number of generation tokens processed.",
            token_buckets,
        )
        self.h_prefill_kv_computed = self._histogram(
            "vllm:request_prefill_kv_computed_tokens",
            "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
            token_buckets,
        )
        self.h_iteration_tokens = self._histogram(
            "vllm:iteration_tokens_total",
            "Histogram of number of tokens per engine_step.",
            ITERATION_TOKEN_BUCKETS,
        )
        self.h_max_generation_tokens = self._histogram(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            token_buckets,
        )
        self.h_n = self._histogram(
            "vllm:request_params_n", "Histogram of the n request parameter.", N_BUCKETS
        )
        self.h_max_tokens = self._histogram(
            "vllm:request_params_max_tokens",
            "Histogram of the max_tokens request parameter.",
            token_buckets,
        )
        self.h_ttft = self._histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            TTFT_BUCKETS,
        )
        self.h_itl = self._histogram(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            TOKEN_LATENCY_BUCKETS,
        )
        self.h_tpot = self._histogram(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            TOKEN_LATENCY_BUCKETS,
        )
        self.h_e2e = self._histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.h_queue = self._histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.h_inference = self._histogram(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.h_prefill = self._histogram(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.h_decode = self._histogram(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )

        self.lora_info: GaugeFamily | None = None
        self._lora_current: tuple[str, str] | None = None
        self._lora_last_stamp = 0.0
        if spec.lora_enabled:
            self.lora_info = GaugeFamily(
                "vllm:lora_requests_info", "Running stats on lora requests."
            )
            self.set_lora((), ())

        cache_info = GaugeFamily(
            "vllm:cache_config_info", "Information of the LLMEngine CacheConfig"
        )
        for e in self._engines:
            cache_info.add(e, self._cache_config_labels(e), 1.0)

        self.http = HttpFamilies(started_at)

        vllm_families: list[Family] = [
            self.running,
            self.waiting,
            self.waiting_by_reason,
            self.kv_usage,
            self.prefix_queries,
            self.prefix_hits,
            external_queries,
            external_hits,
            self.preemptions,
            self.prompt_tokens,
            self.prompt_tokens_by_source,
            self.prompt_tokens_cached,
            self.generation_tokens,
            self.request_success,
            self.h_prompt_tokens,
            self.h_generation_tokens,
            self.h_prefill_kv_computed,
            self.h_iteration_tokens,
            self.h_max_generation_tokens,
            self.h_n,
            self.h_max_tokens,
            self.h_ttft,
            self.h_itl,
            self.h_tpot,
            self.h_e2e,
            self.h_queue,
            self.h_inference,
            self.h_prefill,
            self.h_decode,
        ]
        if self.lora_info is not None:
            vllm_families.append(self.lora_info)
        vllm_families.append(cache_info)
        self._page = Page([*process_families(started_at), *vllm_families, *self.http.families])

    def _gauge(self, name: str, help_text: str) -> GaugeFamily:
        family = GaugeFamily(name, help_text)
        for e in self._engines:
            family.add(e, self._labels[e])
        return family

    def _counter(self, name: str, help_text: str) -> CounterFamily:
        family = CounterFamily(name, help_text)
        for e in self._engines:
            family.add(e, self._labels[e], self._created)
        return family

    def _histogram(self, name: str, help_text: str, bounds: Sequence[float]) -> HistogramFamily:
        family = HistogramFamily(name, help_text, bounds)
        for e in self._engines:
            family.add(e, self._labels[e], self._created)
        return family

    def _cache_config_labels(self, engine: int) -> dict[str, str]:
        # The label set changes between vLLM releases; readers should take only what they need.
        spec = self._spec
        return {
            "block_size": str(spec.block_size),
            "cache_dtype": "auto",
            "calculate_kv_scales": "False",
            "cpu_offload_gb": "0",
            "enable_prefix_caching": "True",
            "engine": str(engine),
            "gpu_memory_utilization": "0.9",
            "is_attention_free": "False",
            "kv_sharing_fast_prefill": "False",
            "mamba_cache_dtype": "auto",
            "mamba_page_size_padded": "None",
            "mamba_ssm_cache_dtype": "auto",
            "num_cpu_blocks": "None",
            "num_gpu_blocks": str(spec.num_gpu_blocks),
            "num_gpu_blocks_override": "None",
            "prefix_caching_hash_algo": "sha256",
            "sliding_window": "None",
            "swap_space": "4",
            "swap_space_bytes": "4294967296",
        }

    def set_load(self, engine: int, load: EngineLoad) -> None:
        self.running.set(engine, load.running)
        self.waiting.set(engine, load.waiting)
        self.waiting_by_reason.set((engine, "capacity"), load.waiting_capacity)
        self.waiting_by_reason.set((engine, "deferred"), load.waiting_deferred)
        self.kv_usage.set(engine, load.kv_cache_usage)

    def set_lora(self, running: Sequence[str], waiting: Sequence[str]) -> None:
        """A new adapter combination becomes a new series stamped now; old ones stay."""
        if self.lora_info is None:
            return
        combo = (",".join(running), ",".join(waiting))
        if combo == self._lora_current:
            return
        self._lora_current = combo
        # Strictly increasing, so the current series is the largest even within one clock tick.
        stamp = max(time.time(), self._lora_last_stamp + 0.001)
        self._lora_last_stamp = stamp
        self.lora_info.add(
            combo,
            {
                "max_lora": str(self._spec.max_lora),
                "running_lora_adapters": combo[0],
                "waiting_lora_adapters": combo[1],
            },
        )
        self.lora_info.set(combo, stamp)

    def record_request(self, done: FinishedRequest) -> None:
        e = done.engine
        self.prompt_tokens.inc(e, done.prompt_tokens)
        self.generation_tokens.inc(e, done.generation_tokens)
        self.prompt_tokens_by_source.inc((e, "local_compute"), done.prompt_tokens)
        self.prefix_queries.inc(e, done.prompt_tokens)
        self.request_success.inc((e, done.finished_reason))
        self.h_prompt_tokens.observe(e, done.prompt_tokens)
        self.h_generation_tokens.observe(e, done.generation_tokens)
        self.h_prefill_kv_computed.observe(e, done.prompt_tokens)
        self.h_iteration_tokens.observe(e, done.prompt_tokens + 1)
        self.h_max_generation_tokens.observe(e, done.max_tokens)
        self.h_n.observe(e, done.n)
        self.h_max_tokens.observe(e, done.max_tokens)
        self.h_ttft.observe(e, done.ttft_seconds)
        self.h_itl.observe(e, done.per_output_token_seconds)
        self.h_tpot.observe(e, done.per_output_token_seconds)
        self.h_e2e.observe(e, done.e2e_seconds)
        self.h_queue.observe(e, done.queue_seconds)
        self.h_inference.observe(e, done.inference_seconds)
        self.h_prefill.observe(e, done.prefill_seconds)
        self.h_decode.observe(e, done.decode_seconds)

    def record_http(self, exchange: HttpExchange) -> None:
        self.http.record(exchange)

    def render(self) -> bytes:
        return self._page.render()
