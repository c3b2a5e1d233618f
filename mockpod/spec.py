"""What one mock pod is: the knobs a test or the CLI turns, in one frozen record.

Kept apart from the simulation so the CLI, the server and the metric pages can share it
without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

__all__ = ["DEFAULT_MODEL", "EngineType", "PodSpec", "consecutive_specs"]

EngineType = Literal["vllm", "sglang"]

# A long, real-looking served name: model_name is on every line, so it sets the page size.
DEFAULT_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@dataclass(frozen=True)
class PodSpec:
    """One pod. Timing and capacity defaults make a request last milliseconds, not seconds."""

    model: str = DEFAULT_MODEL
    port: int = 0
    name: str = "mock-pod"
    engine_type: EngineType = "vllm"
    # Data-parallel engines behind one API server: one series per engine on the page.
    engines: int = 1
    loras: tuple[str, ...] = ()
    # vLLM's --enable-lora; implied by a non-empty ``loras``.
    enable_lora: bool = False
    max_lora: int = 1
    # vLLM's --max-num-seqs, per engine: more concurrent requests than this wait.
    max_num_seqs: int = 8
    max_model_len: int = 32768
    block_size: int = 16
    # KV capacity per engine is block_size * num_gpu_blocks tokens.
    num_gpu_blocks: int = 8192
    seconds_per_output_token: float = 0.002
    seconds_per_prompt_token: float = 0.00002
    # A cap, so a request asking for 30k tokens does not hold a test for a minute.
    max_request_seconds: float = 2.0
    # Real vLLM gzips /metrics for clients that accept it; off by default because the
    # compression would cost the benchmark's single mock process more than the page itself.
    gzip: bool = False
    # Benchmarks: move the router's gauges on every /metrics request, so every scrape reads
    # changed values (commits and stream updates on each one) even with no traffic.
    churn: bool = False
    # KV-cache events as vLLM publishes them (ZMQ PUB on this port; None: off), with an
    # optional replay ROUTER, events as tagged arrays ("array") or maps ("map").
    kv_events_port: int | None = None
    kv_events_replay_port: int | None = None
    kv_events_shape: str = "array"

    def __post_init__(self) -> None:
        if self.engines < 1:
            raise ValueError("engines must be >= 1")
        if self.max_num_seqs < 1:
            raise ValueError("max_num_seqs must be >= 1")
        if self.max_lora < 1:
            raise ValueError("max_lora must be >= 1")
        if self.block_size < 1 or self.num_gpu_blocks < 1:
            raise ValueError("block_size and num_gpu_blocks must be >= 1")
        if self.engine_type not in ("vllm", "sglang"):
            raise ValueError(f"unknown engine_type {self.engine_type!r}")
        if self.kv_events_shape not in ("array", "map"):
            raise ValueError(f"kv_events_shape must be array or map, got {self.kv_events_shape!r}")
        if self.model in self.loras:
            raise ValueError("a LoRA adapter cannot share the base model's name")

    @property
    def lora_enabled(self) -> bool:
        return self.enable_lora or bool(self.loras)

    @property
    def kv_capacity_tokens(self) -> int:
        """Per engine."""
        return self.block_size * self.num_gpu_blocks


def consecutive_specs(template: PodSpec, count: int) -> list[PodSpec]:
    """``count`` copies on ports P..P+count-1 (all 0 when P is 0), named ``<name>-<i>``."""
    if count < 1:
        raise ValueError("count must be >= 1")
    if count == 1:
        return [template]
    return [
        replace(
            template,
            port=template.port + i if template.port else 0,
            name=f"{template.name}-{i}",
            kv_events_port=_offset(template.kv_events_port, i),
            kv_events_replay_port=_offset(template.kv_events_replay_port, i),
        )
        for i in range(count)
    ]


def _offset(port: int | None, i: int) -> int | None:
    """The i-th pod's copy of an optional port (0 stays 0: any free port)."""
    return port + i if port else port
