"""The SGLang ``/metrics`` page (``--enable-metrics``).

SGLang exports through prometheus_client's multiprocess collector, which is why this page
looks different from vLLM's: a histogram's ``_sum`` precedes its buckets, nothing has
``_created``, families are not grouped by kind, and there are no process or GC families.
"""

from __future__ import annotations

from collections.abc import Sequence

from mockpod.exposition import CounterFamily, Family, GaugeFamily, HistogramFamily, Page
from mockpod.page import EngineLoad, FinishedRequest, HttpExchange
from mockpod.spec import PodSpec

__all__ = ["SglangMetrics"]

TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    15.0, 20.0, 25.0, 30.0,
)  # fmt: skip
E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
)  # fmt: skip
TPOT_BUCKETS = (
    0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
    0.75, 1.0, 2.5,
)  # fmt: skip
ITL_BUCKETS = (
    0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.06, 0.08, 0.1,
    0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0,
)  # fmt: skip


class SglangMetrics:
    """An SGLang pod's page; with several engines each gets a ``dp_rank`` label."""

    def __init__(self, spec: PodSpec, started_at: float) -> None:
        self._spec = spec
        self._engines = range(spec.engines)
        self._labels: list[dict[str, str]] = []
        for e in self._engines:
            labels = {
                "engine_type": "unified",
                "model_name": spec.model,
                "pp_rank": "0",
                "tp_rank": "0",
            }
            if spec.engines > 1:
                labels["dp_rank"] = str(e)
            self._labels.append(labels)

        self.prompt_tokens = self._counter(
            "sglang:prompt_tokens", "Number of prefill tokens processed."
        )
        self.generation_tokens = self._counter(
            "sglang:generation_tokens", "Number of generation tokens processed."
        )
        self.cached_tokens = self._counter(
            "sglang:cached_tokens", "Number of cached prompt tokens."
        )
        self.num_requests = self._counter("sglang:num_requests", "Number of requests processed.")
        self.token_usage = self._gauge("sglang:token_usage", "The token usage")
        self.cache_hit_rate = self._gauge("sglang:cache_hit_rate", "The prefix cache hit rate")
        self.h_ttft = self._histogram(
            "sglang:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            TTFT_BUCKETS,
        )
        self.h_e2e = self._histogram(
            "sglang:e2e_request_latency_seconds",
            "Histogram of End-to-end request latency in seconds",
            E2E_BUCKETS,
        )
        self.h_tpot = self._histogram(
            "sglang:time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
            TPOT_BUCKETS,
        )
        self.h_itl = self._histogram(
            "sglang:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            ITL_BUCKETS,
        )
        self.running = self._gauge("sglang:num_running_reqs", "The number of running requests")
        self.used_tokens = self._gauge("sglang:num_used_tokens", "The number of used tokens")
        self.gen_throughput = self._gauge(
            "sglang:gen_throughput", "The generation throughput (token/s)"
        )
        self.queue = self._gauge(
            "sglang:num_queue_reqs", "The number of requests in the waiting queue"
        )
        max_tokens = self._gauge(
            "sglang:max_total_num_tokens",
            "Maximum total number of tokens in the KV cache pool.",
        )
        for e in self._engines:
            max_tokens.set(e, float(spec.kv_capacity_tokens))
        cache_info = GaugeFamily(
            "sglang:cache_config_info", "Information of the cache configuration"
        )
        cache_info.add(
            0, {"num_pages": str(spec.num_gpu_blocks), "page_size": str(spec.block_size)}, 1.0
        )
        families: list[Family] = [
            self.prompt_tokens,
            self.generation_tokens,
            self.cached_tokens,
            self.num_requests,
            self.token_usage,
            self.cache_hit_rate,
            self.h_ttft,
            self.h_e2e,
            self.h_tpot,
            self.h_itl,
            self.running,
            self.used_tokens,
            self.gen_throughput,
            self.queue,
            max_tokens,
            cache_info,
        ]
        self._page = Page(families)

    def _gauge(self, name: str, help_text: str) -> GaugeFamily:
        family = GaugeFamily(name, help_text)
        for e in self._engines:
            family.add(e, self._labels[e])
        return family

    def _counter(self, name: str, help_text: str) -> CounterFamily:
        family = CounterFamily(name, help_text, created=False)
        for e in self._engines:
            family.add(e, self._labels[e], 0.0)
        return family

    def _histogram(self, name: str, help_text: str, bounds: Sequence[float]) -> HistogramFamily:
        family = HistogramFamily(name, help_text, bounds, multiprocess=True)
        for e in self._engines:
            family.add(e, self._labels[e], 0.0)
        return family

    def set_load(self, engine: int, load: EngineLoad) -> None:
        self.running.set(engine, load.running)
        self.queue.set(engine, load.waiting)
        self.token_usage.set(engine, load.kv_cache_usage)
        self.used_tokens.set(engine, float(load.used_tokens))

    def set_lora(self, running: Sequence[str], waiting: Sequence[str]) -> None:
        """SGLang exports no LoRA metric."""

    def record_request(self, done: FinishedRequest) -> None:
        e = done.engine
        self.prompt_tokens.inc(e, done.prompt_tokens)
        self.generation_tokens.inc(e, done.generation_tokens)
        self.num_requests.inc(e)
        self.h_ttft.observe(e, done.ttft_seconds)
        self.h_e2e.observe(e, done.e2e_seconds)
        self.h_tpot.observe(e, done.per_output_token_seconds)
        self.h_itl.observe(e, done.per_output_token_seconds)
        if done.decode_seconds > 0:
            self.gen_throughput.set(e, done.generation_tokens / done.decode_seconds)

    def record_http(self, exchange: HttpExchange) -> None:
        """SGLang's page has no HTTP server families."""

    def render(self) -> bytes:
        return self._page.render()
