"""The contract between the simulated pod and a metrics page flavour (vLLM, SGLang, ...).

The simulation pushes facts (load per engine, LoRA adapters, finished requests, HTTP
exchanges) as they change; a flavour turns them into its engine's metric names and renders.
Pushing keeps a scrape to one join of cached text, however busy the pod is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["EngineLoad", "FinishedRequest", "HttpExchange", "PodMetrics"]


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """What one engine reports right now (override or simulation, already resolved)."""

    running: float
    waiting: float
    kv_cache_usage: float
    # Split of ``waiting``: no free slot or KV vs. held back (e.g. the LoRA limit).
    waiting_capacity: float = 0.0
    waiting_deferred: float = 0.0
    used_tokens: int = 0


@dataclass(frozen=True, slots=True)
class FinishedRequest:
    """A request's life in phases, from which every latency histogram is derived."""

    engine: int
    prompt_tokens: int
    generation_tokens: int
    max_tokens: int
    n: int
    queue_seconds: float
    prefill_seconds: float
    decode_seconds: float
    finished_reason: str = "length"

    @property
    def ttft_seconds(self) -> float:
        return self.queue_seconds + self.prefill_seconds

    @property
    def inference_seconds(self) -> float:
        return self.prefill_seconds + self.decode_seconds

    @property
    def e2e_seconds(self) -> float:
        return self.queue_seconds + self.inference_seconds

    @property
    def per_output_token_seconds(self) -> float:
        return self.decode_seconds / max(1, self.generation_tokens - 1)


@dataclass(frozen=True, slots=True)
class HttpExchange:
    """One API request as HTTP instrumentation sees it."""

    handler: str
    method: str
    status: int
    request_bytes: int
    response_bytes: int
    seconds: float


class PodMetrics(Protocol):
    """A page flavour. Calls are cheap bookkeeping; ``render`` joins cached text."""

    def set_load(self, engine: int, load: EngineLoad) -> None:
        """Publish one engine's gauges."""

    def set_lora(self, running: Sequence[str], waiting: Sequence[str]) -> None:
        """Publish the adapters in use; a no-op where the engine has no LoRA metric."""

    def record_request(self, done: FinishedRequest) -> None:
        """Count a finished request into counters and histograms."""

    def record_http(self, exchange: HttpExchange) -> None:
        """Count an API request into the HTTP server families, where the flavour has them."""

    def render(self) -> bytes:
        """The whole page in text format 0.0.4."""
