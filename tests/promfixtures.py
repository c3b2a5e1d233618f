"""Realistic model-server `/metrics` pages for scanner and extractor tests.

Pages are rendered by prometheus_client itself (as vLLM does), so the format
details that break naive scanners are the real ones: HELP/TYPE lines that
repeat the name, `_created` families, sorted label names with `le` in the
middle, prefix traps such as `vllm:num_requests_waiting_by_reason`, and the
size (one engine ≈ 59 KB, mostly histogram buckets).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    Summary,
    generate_latest,
)

MODEL = "meta-llama/Llama-3.1-8B-Instruct"

_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0)
_LATENCY_BUCKETS += (60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0)
_TTFT_BUCKETS += (2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
_TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)
_TPOT_BUCKETS += (2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
_TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)
_ITER_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
_N_BUCKETS = (1, 2, 5, 10, 20)
_HTTP_HIGHR = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0)
_HTTP_HIGHR += (3.5, 4.0, 4.5, 5.0, 7.5, 10.0, 30.0, 60.0)


@dataclass
class Lora:
    """One `vllm:lora_requests_info` series: the value is the time of the last change."""

    running: str
    waiting: str
    max_lora: int
    timestamp: float


@dataclass
class VllmPage:
    """What a vLLM V1 pod shows; one entry per data-parallel engine in the per-engine tuples."""

    waiting: Sequence[float] = (3,)
    running: Sequence[float] = (5,)
    kv: Sequence[float] = (0.42,)
    #: Expose the KV gauge under its current name, its pre-V1 name, or both.
    kv_names: Sequence[str] = ("vllm:kv_cache_usage_perc",)
    #: Older-name values when both names are shown (defaults to `kv`).
    legacy_kv: Sequence[float] | None = None
    lora: Sequence[Lora] = ()
    block_size: int | None = 16
    num_gpu_blocks: int | None = 4096
    omit: frozenset[str] = frozenset()
    seed: int = 0
    model: str = MODEL
    process_metrics: bool = True
    extra_labels: dict[str, str] = field(default_factory=dict)

    @property
    def engines(self) -> int:
        return len(self.waiting)


def vllm_page(page: VllmPage | None = None) -> bytes:
    """Render a vLLM V1 `/metrics` page as prometheus_client (and so vLLM) writes it."""
    page = page or VllmPage()
    rng = random.Random(page.seed)
    reg = CollectorRegistry()
    if page.process_metrics:
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
    names = ["engine", "model_name", *page.extra_labels]

    def gauge(name: str, doc: str, values: Sequence[float]) -> None:
        if name in page.omit:
            return
        g = Gauge(name, doc, names, registry=reg)
        for engine, value in enumerate(values):
            g.labels(str(engine), page.model, *page.extra_labels.values()).set(value)

    gauge(
        "vllm:num_requests_running", "Number of requests in model execution batches.", page.running
    )
    gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", page.waiting)
    if "vllm:num_requests_waiting_by_reason" not in page.omit:
        by_reason = Gauge(
            "vllm:num_requests_waiting_by_reason",
            "Number of requests waiting, by reason.",
            [*names, "reason"],
            registry=reg,
        )
        for engine in range(page.engines):
            for reason in ("capacity", "deferred"):
                labels = (str(engine), page.model, *page.extra_labels.values(), reason)
                by_reason.labels(*labels).set(rng.randint(50, 90))
    for kv_name in page.kv_names:
        values = page.kv
        if kv_name == "vllm:gpu_cache_usage_perc" and page.legacy_kv is not None:
            values = page.legacy_kv
        gauge(kv_name, "KV-cache usage. 1 means 100 percent usage.", values)
    if page.lora:
        lora = Gauge(
            "vllm:lora_requests_info",
            "Running stats on lora requests.",
            ["max_lora", "running_lora_adapters", "waiting_lora_adapters"],
            registry=reg,
        )
        for info in page.lora:
            lora.labels(str(info.max_lora), info.running, info.waiting).set(info.timestamp)
    if page.block_size is not None and "vllm:cache_config_info" not in page.omit:
        info_labels = {
            "block_size": str(page.block_size),
            "cache_dtype": "auto",
            "enable_prefix_caching": "True",
            "gpu_memory_utilization": "0.9",
            "num_cpu_blocks": "None",
            "num_gpu_blocks": str(page.num_gpu_blocks),
            "swap_space_bytes": "4294967296",
        }
        cache = Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            list(info_labels),
            registry=reg,
        )
        cache.labels(**info_labels).set(1)

    for name, doc in (
        ("vllm:num_preemptions", "Cumulative number of preemption from the engine."),
        ("vllm:prompt_tokens", "Number of prefill tokens processed."),
        ("vllm:generation_tokens", "Number of generation tokens processed."),
        (
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.",
        ),
        ("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens."),
    ):
        c = Counter(name, doc, names, registry=reg)
        for engine in range(page.engines):
            c.labels(str(engine), page.model, *page.extra_labels.values()).inc(
                rng.randint(0, 10**6)
            )
    success = Counter(
        "vllm:request_success",
        "Count of successfully processed requests.",
        [*names, "finished_reason"],
        registry=reg,
    )
    by_source = Counter(
        "vllm:prompt_tokens_by_source", "Prompt tokens by source.", [*names, "source"], registry=reg
    )
    for engine in range(page.engines):
        for reason in ("stop", "length", "abort", "error"):
            labels = (str(engine), page.model, *page.extra_labels.values(), reason)
            success.labels(*labels).inc(rng.randint(0, 5000))
        for source in ("local_compute", "local_cache_hit", "external_kv_transfer"):
            labels = (str(engine), page.model, *page.extra_labels.values(), source)
            by_source.labels(*labels).inc(rng.randint(0, 5000))

    histograms: list[tuple[str, Sequence[float], float]] = [
        ("vllm:time_to_first_token_seconds", _TTFT_BUCKETS, 0.3),
        ("vllm:inter_token_latency_seconds", _TPOT_BUCKETS, 0.03),
        ("vllm:request_time_per_output_token_seconds", _TPOT_BUCKETS, 0.03),
        ("vllm:e2e_request_latency_seconds", _LATENCY_BUCKETS, 4.0),
        ("vllm:request_queue_time_seconds", _LATENCY_BUCKETS, 0.5),
        ("vllm:request_inference_time_seconds", _LATENCY_BUCKETS, 3.5),
        ("vllm:request_prefill_time_seconds", _LATENCY_BUCKETS, 0.3),
        ("vllm:request_decode_time_seconds", _LATENCY_BUCKETS, 3.0),
        ("vllm:request_prompt_tokens", _TOKEN_BUCKETS, 800.0),
        ("vllm:request_generation_tokens", _TOKEN_BUCKETS, 300.0),
        ("vllm:request_max_num_generation_tokens", _TOKEN_BUCKETS, 1000.0),
        ("vllm:request_params_max_tokens", _TOKEN_BUCKETS, 1000.0),
        ("vllm:iteration_tokens_total", _ITER_BUCKETS, 200.0),
        ("vllm:request_params_n", _N_BUCKETS, 1.0),
    ]
    for name, buckets, mean in histograms:
        h = Histogram(name, f"Histogram of {name[5:]}.", names, buckets=buckets, registry=reg)
        for engine in range(page.engines):
            child = h.labels(str(engine), page.model, *page.extra_labels.values())
            for _ in range(40):
                child.observe(rng.expovariate(1 / mean))

    handlers = ("/v1/completions", "/v1/chat/completions", "/metrics", "/health", "/v1/models")
    handlers += ("/tokenize", "/detokenize", "/ping", "/version")
    http_total = Counter(
        "http_requests_total", "Total number of requests.", ["handler", "method", "status"],
        registry=reg,
    )  # fmt: skip
    req_size = Summary("http_request_size_bytes", "Request size.", ["handler"], registry=reg)
    resp_size = Summary("http_response_size_bytes", "Response size.", ["handler"], registry=reg)
    duration = Histogram(
        "http_request_duration_seconds", "Request latency.", ["handler", "method"],
        buckets=(0.1, 0.5, 1.0), registry=reg,
    )  # fmt: skip
    highr = Histogram(
        "http_request_duration_highr_seconds", "Latency with many buckets.", buckets=_HTTP_HIGHR,
        registry=reg,
    )  # fmt: skip
    for handler in handlers:
        method = "POST" if handler.startswith(("/v1/c", "/tok", "/detok")) else "GET"
        http_total.labels(handler, method, "2xx").inc(rng.randint(1, 10**5))
        req_size.labels(handler).observe(rng.randint(0, 4000))
        resp_size.labels(handler).observe(rng.randint(0, 60000))
        duration.labels(handler, method).observe(rng.random())
        highr.observe(rng.random() * 3)
    return generate_latest(reg)


def lines_of(page: bytes, name: str) -> list[bytes]:
    """The sample lines of exactly `name` (a slow reference, for test assertions)."""
    out = []
    for line in page.splitlines():
        head = line.split(b"{", 1)[0].split(b" ", 1)[0]
        if head == name.encode():
            out.append(line)
    return out
