"""The collector: one polling task per endpoint and source, and staleness.

Each (endpoint, source) pair is a *lane* with its own asyncio task, so a slow
or dead pod only ever delays its own lane. Lanes start at a random offset
inside the first interval (jitter), so a fleet discovered at once does not
poll in lock-step. The collector is also the discovery sink: upserts start
lanes, deletes cancel and await them, in the order discovery reports them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from datalayer.config import CollectorSettings, SourceBinding
from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.store import EndpointStore

log = logging.getLogger(__name__)


class CollectorObserver(Protocol):
    """Hooks for self-metrics; the core does not know how they are exported."""

    def on_poll(self, source_type: str, seconds: float, error: str | None) -> None: ...

    def on_extract_errors(self, source_type: str, count: int) -> None: ...

    def on_state_change(self, name: str, stale: bool, reason: str) -> None: ...


class _NullObserver:
    def on_poll(self, source_type: str, seconds: float, error: str | None) -> None:
        pass

    def on_extract_errors(self, source_type: str, count: int) -> None:
        pass

    def on_state_change(self, name: str, stale: bool, reason: str) -> None:
        pass


@dataclass(slots=True)
class _Lane:
    """Collection state of one endpoint for one source."""

    binding: SourceBinding
    started_at: float
    last_success: float | None = None
    error: str = "no data collected yet"
    polls: int = 0
    task: asyncio.Task[None] | None = None

    def is_stale(self, now: float, threshold: float) -> bool:
        if self.last_success is None:
            return True
        return now - self.last_success > threshold


class Collector:
    """Owns every polling task; implements the discovery sink."""

    def __init__(
        self,
        store: EndpointStore,
        bindings: Sequence[SourceBinding],
        settings: CollectorSettings,
        observer: CollectorObserver | None = None,
    ) -> None:
        self.store = store
        self.bindings = list(bindings)
        self.settings = settings
        self.observer: CollectorObserver = observer or _NullObserver()
        self.synced = asyncio.Event()
        self._lanes: dict[str, list[_Lane]] = {}
        self._closed = False

    # --- discovery sink ---

    async def upsert(self, spec: EndpointSpec) -> None:
        if self._closed:
            return
        self.store.upsert(spec)
        if spec.name in self._lanes:
            return  # a relabel or move keeps its lanes: they read the spec each tick
        loop = asyncio.get_running_loop()
        lanes = [_Lane(binding, loop.time()) for binding in self.bindings]
        self._lanes[spec.name] = lanes
        for lane in lanes:
            lane.task = asyncio.create_task(
                self._run(spec.name, lane), name=f"collect {spec.name} {lane.binding.source.name}"
            )

    async def delete(self, name: str) -> None:
        lanes = self._lanes.pop(name, None)
        self.store.remove(name)
        if lanes:
            await _cancel_and_wait([lane.task for lane in lanes if lane.task is not None])

    async def replace_all(self, specs: Sequence[EndpointSpec]) -> None:
        wanted = {spec.name for spec in specs}
        for name in [n for n in self._lanes if n not in wanted]:
            await self.delete(name)
        for spec in specs:
            await self.upsert(spec)

    def mark_synced(self) -> None:
        self.synced.set()

    # --- lifecycle and reads ---

    async def close(self) -> None:
        """Cancel and await every lane; the store keeps its last state."""
        self._closed = True
        tasks = [lane.task for lanes in self._lanes.values() for lane in lanes if lane.task]
        self._lanes.clear()
        await _cancel_and_wait(tasks)

    def task_count(self) -> int:
        return sum(1 for lanes in self._lanes.values() for lane in lanes if lane.task)

    def polls(self) -> int:
        return sum(lane.polls for lanes in self._lanes.values() for lane in lanes)

    # --- the lane loop ---

    async def _run(self, name: str, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        binding = lane.binding
        source = binding.source
        interval = binding.interval
        await asyncio.sleep(random.uniform(0, interval))
        next_tick = loop.time()
        while True:
            record = self.store.get(name)
            if record is None:
                return
            started = loop.time()
            error: str | None = None
            try:
                async with asyncio.timeout(binding.timeout):
                    payload = await source.poll(record.spec)
            except TimeoutError:
                error = f"poll timed out after {binding.timeout:g}s"
            except Exception as exc:
                error = describe_error(exc)
            else:
                update = EndpointUpdate()
                for extractor in binding.extractors:
                    try:
                        extractor.extract(payload, record.spec, update)
                    except Exception as exc:
                        update.error(extractor.name, f"extractor failed: {describe_error(exc)}")
                self.store.apply(name, update, time.time())
                lane.last_success = loop.time()
                lane.error = "; ".join(update.errors)
                if update.errors:
                    self.observer.on_extract_errors(source.type_name, len(update.errors))
            lane.polls += 1
            now = loop.time()
            self.observer.on_poll(source.type_name, now - started, error)
            if error is not None:
                lane.error = error
            self._refresh_status(name, now)
            next_tick += interval
            if next_tick < now:
                next_tick = now  # missed ticks are skipped, not bunched up
            await asyncio.sleep(next_tick - now)

    def _refresh_status(self, name: str, now: float) -> None:
        lanes = self._lanes.get(name)
        record = self.store.get(name)
        if not lanes or record is None:
            return
        threshold = self.settings.staleness_threshold
        stale = any(lane.is_stale(now, threshold) for lane in lanes)
        if len(lanes) == 1:
            last_error = lanes[0].error
        else:
            last_error = "; ".join(
                f"{lane.binding.source.name}: {lane.error}" for lane in lanes if lane.error
            )
        was_stale = record.stale
        if self.store.set_status(name, stale, last_error) and was_stale != stale:
            reason = last_error or "data fresh again"
            self.observer.on_state_change(name, stale, reason)
            log.info(
                "endpoint %s is %s: %s",
                name,
                "stale" if stale else "fresh",
                reason,
                extra={"endpoint": name, "stale": stale},
            )


def describe_error(exc: BaseException) -> str:
    """A one-line reason that names the fault, for `last_error`."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    kind = type(exc).__name__
    return f"{kind}: {text}" if text else kind


async def _cancel_and_wait(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
