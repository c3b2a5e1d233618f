"""The simulated pod: a scheduler per engine that moves requests from waiting to running.

The rules are a small version of vLLM's, enough for the gauges a router scores on to move the
way they would under load:

* a request is admitted while its engine runs fewer than ``max_num_seqs`` requests and its
  KV blocks (prompt + max_tokens, rounded up to blocks) fit; otherwise it waits, in order;
* a request for an adapter that would exceed ``max_lora`` distinct running adapters is
  skipped over (``deferred``) while later requests may still go in, as vLLM does;
* a request runs for a time proportional to its tokens, capped, then is observed into the
  histograms;
* KV use is the share of blocks held by running requests.

Values set through the control endpoint (:class:`Overrides`) win over the simulation, which
keeps running underneath, so a test can pin a gauge and still send traffic.

Every change is pushed to the page at once (:meth:`PodState._publish`), so a scrape never
computes anything.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from mockpod.flavours import build_metrics
from mockpod.page import EngineLoad, FinishedRequest, PodMetrics
from mockpod.spec import PodSpec

__all__ = ["Generation", "Overrides", "PodState", "RequestTooLong", "UnknownModel"]


class UnknownModel(LookupError):
    """The request named neither the base model nor a loaded adapter."""


class RequestTooLong(ValueError):
    """Prompt plus max_tokens exceed the model's context, as vLLM rejects up front."""


@dataclass(frozen=True, slots=True)
class Generation:
    """What the API layer needs to answer a finished request."""

    engine: int
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass
class Overrides:
    """Values pinned through ``/control``; ``None`` means "report the simulation".

    Counts and KV use are stored per engine (the control layer spreads a single number).
    """

    waiting: list[float] | None = None
    running: list[float] | None = None
    kv_cache_usage: list[float] | None = None
    running_lora: list[str] | None = None
    waiting_lora: list[str] | None = None

    def clear(self) -> None:
        for f in fields(self):
            setattr(self, f.name, None)

    def as_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(eq=False, slots=True)
class _Request:
    engine: int
    lora: str | None
    prompt_tokens: int
    max_tokens: int
    n: int
    blocks: int
    arrival: float
    admitted_at: float | None = None
    deferred: bool = False
    wake: asyncio.Future[None] | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.max_tokens * self.n


@dataclass(eq=False)
class _Engine:
    index: int
    running: list[_Request] = field(default_factory=list)
    waiting: list[_Request] = field(default_factory=list)
    used_blocks: int = 0
    used_tokens: int = 0
    loras: Counter[str] = field(default_factory=Counter)


class PodState:
    """One pod's engines, overrides and metrics page."""

    def __init__(self, spec: PodSpec, metrics: PodMetrics | None = None) -> None:
        self.spec = spec
        self.started_at = time.time()
        self.metrics = metrics if metrics is not None else build_metrics(spec, self.started_at)
        self.overrides = Overrides()
        self._engines = [_Engine(i) for i in range(spec.engines)]
        self._churn = 0
        self._publish()

    # -- models ------------------------------------------------------------------------------

    def resolve_model(self, model: str) -> str | None:
        """The adapter a model name selects (``None`` for the base model)."""
        if model == self.spec.model:
            return None
        if model in self.spec.loras:
            return model
        raise UnknownModel(model)

    # -- requests ----------------------------------------------------------------------------

    async def generate(
        self, model: str, prompt_tokens: int, max_tokens: int, n: int = 1
    ) -> Generation:
        """Queue, run and account one request; returns when it has "generated"."""
        spec = self.spec
        lora = self.resolve_model(model)
        prompt_tokens = max(1, prompt_tokens)
        if prompt_tokens + max_tokens > spec.max_model_len:
            raise RequestTooLong(
                f"This model's maximum context length is {spec.max_model_len} tokens. However, "
                f"you requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the "
                f"messages, {max_tokens} in the completion)."
            )
        loop = asyncio.get_running_loop()
        engine = min(self._engines, key=lambda e: (len(e.running) + len(e.waiting), e.index))
        tokens = prompt_tokens + max_tokens * n
        request = _Request(
            engine=engine.index,
            lora=lora,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            n=n,
            blocks=-(-tokens // spec.block_size),
            arrival=loop.time(),
        )
        engine.waiting.append(request)
        self._schedule(engine)
        if request.admitted_at is None:
            request.wake = loop.create_future()
            self._publish()
            try:
                await request.wake
            except asyncio.CancelledError:
                if request.admitted_at is None:
                    engine.waiting.remove(request)
                else:
                    self._release(engine, request)
                self._schedule(engine)
                self._publish()
                raise
        else:
            self._publish()

        prefill, decode = self._durations(request)
        try:
            await asyncio.sleep(prefill + decode)
        except asyncio.CancelledError:
            self._finish(engine, request, "abort", prefill, decode)
            raise
        self._finish(engine, request, "length", prefill, decode)
        return Generation(engine.index, prompt_tokens, max_tokens * n, "length")

    def _durations(self, request: _Request) -> tuple[float, float]:
        spec = self.spec
        prefill = request.prompt_tokens * spec.seconds_per_prompt_token
        decode = request.max_tokens * spec.seconds_per_output_token
        total = prefill + decode
        if total > spec.max_request_seconds > 0:
            scale = spec.max_request_seconds / total
            prefill, decode = prefill * scale, decode * scale
        return prefill, decode

    def _finish(
        self, engine: _Engine, request: _Request, reason: str, prefill: float, decode: float
    ) -> None:
        self._release(engine, request)
        assert request.admitted_at is not None
        queue = request.admitted_at - request.arrival
        self.metrics.record_request(
            FinishedRequest(
                engine=engine.index,
                prompt_tokens=request.prompt_tokens,
                generation_tokens=request.max_tokens * request.n,
                max_tokens=request.max_tokens,
                n=request.n,
                queue_seconds=queue,
                prefill_seconds=prefill,
                decode_seconds=decode,
                finished_reason=reason,
            )
        )
        self._schedule(engine)
        self._publish()

    def _release(self, engine: _Engine, request: _Request) -> None:
        engine.running.remove(request)
        engine.used_blocks -= request.blocks
        engine.used_tokens -= request.tokens
        if request.lora is not None:
            engine.loras[request.lora] -= 1
            if engine.loras[request.lora] <= 0:
                del engine.loras[request.lora]

    def _schedule(self, engine: _Engine) -> None:
        """Admit waiting requests in order while slots and KV blocks last."""
        spec = self.spec
        still_waiting: list[_Request] = []
        full = False
        for request in engine.waiting:
            if full:
                request.deferred = False
                still_waiting.append(request)
                continue
            no_slot = len(engine.running) >= spec.max_num_seqs
            # An empty engine takes any request, so one larger than the cache cannot block.
            no_kv = engine.running and engine.used_blocks + request.blocks > spec.num_gpu_blocks
            if no_slot or no_kv:
                full = True
                request.deferred = False
                still_waiting.append(request)
                continue
            lora = request.lora
            if lora is not None and lora not in engine.loras and len(engine.loras) >= spec.max_lora:
                request.deferred = True
                still_waiting.append(request)
                continue
            self._admit(engine, request)
        engine.waiting = still_waiting

    def _admit(self, engine: _Engine, request: _Request) -> None:
        request.admitted_at = asyncio.get_running_loop().time()
        request.deferred = False
        engine.running.append(request)
        engine.used_blocks += request.blocks
        engine.used_tokens += request.tokens
        if request.lora is not None:
            engine.loras[request.lora] += 1
        if request.wake is not None and not request.wake.done():
            request.wake.set_result(None)

    # -- what the pod reports ----------------------------------------------------------------

    def engine_load(self, index: int) -> EngineLoad:
        """One engine's reported values: an override where set, else the simulation."""
        engine = self._engines[index]
        ov = self.overrides
        deferred = sum(1 for r in engine.waiting if r.deferred)
        waiting_capacity = float(len(engine.waiting) - deferred)
        waiting_deferred = float(deferred)
        if ov.waiting is not None:
            waiting_capacity, waiting_deferred = ov.waiting[index], 0.0
        waiting = waiting_capacity + waiting_deferred
        running = float(len(engine.running)) if ov.running is None else ov.running[index]
        if ov.kv_cache_usage is None:
            kv = min(1.0, engine.used_blocks / self.spec.num_gpu_blocks)
        else:
            kv = ov.kv_cache_usage[index]
        return EngineLoad(
            running=running,
            waiting=waiting,
            kv_cache_usage=kv,
            waiting_capacity=waiting_capacity,
            waiting_deferred=waiting_deferred,
            used_tokens=engine.used_tokens,
        )

    def lora_adapters(self) -> tuple[list[str], list[str]]:
        """(running, waiting) adapter names, in first-seen order, overrides applied."""
        running = self.overrides.running_lora
        if running is None:
            running = _unique(r.lora for e in self._engines for r in e.running)
        waiting = self.overrides.waiting_lora
        if waiting is None:
            waiting = _unique(r.lora for e in self._engines for r in e.waiting)
        return running, waiting

    def report(self) -> dict[str, Any]:
        """The values the page shows, summed over engines (KV averaged), for ``GET /control``."""
        loads = [self.engine_load(e.index) for e in self._engines]
        running_lora, waiting_lora = self.lora_adapters()
        return {
            "pod": self.spec.name,
            "model": self.spec.model,
            "engine_type": self.spec.engine_type,
            "waiting": _number(sum(x.waiting for x in loads)),
            "running": _number(sum(x.running for x in loads)),
            "kv_cache_usage": sum(x.kv_cache_usage for x in loads) / len(loads),
            "running_lora": running_lora,
            "waiting_lora": waiting_lora,
            "engines": [
                {
                    "engine": i,
                    "waiting": _number(x.waiting),
                    "running": _number(x.running),
                    "kv_cache_usage": x.kv_cache_usage,
                }
                for i, x in enumerate(loads)
            ],
            "overrides": self.overrides.as_json(),
        }

    def churn(self) -> None:
        """Move every engine's waiting, running and KV gauges to new values (``--churn``)."""
        self._churn += 1
        tick = self._churn
        for engine in self._engines:
            load = self.engine_load(engine.index)
            waiting = float(tick % 7)
            self.metrics.set_load(
                engine.index,
                replace(
                    load,
                    waiting=waiting,
                    waiting_capacity=waiting,
                    waiting_deferred=0.0,
                    running=float(tick % 5),
                    kv_cache_usage=(tick % 100) / 100,
                ),
            )

    def refresh(self) -> None:
        """Re-publish after the overrides changed."""
        self._publish()

    def _publish(self) -> None:
        for engine in self._engines:
            self.metrics.set_load(engine.index, self.engine_load(engine.index))
        running, waiting = self.lora_adapters()
        self.metrics.set_lora(running, waiting)


def _unique(names: Iterable[str | None]) -> list[str]:
    return [name for name in dict.fromkeys(names) if name is not None]


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value
