"""The collector: one polling task per endpoint and source, and staleness.

Each (endpoint, source) pair is a *lane*. A polling source's lane has its own
asyncio task, so a slow or dead pod only ever delays its own lane; an
event-driven source's lane has no task and is fed by the source. A source
with a label `selector` only gets lanes for the endpoints it selects. Lanes start at a random offset
inside the first interval (jitter), so a fleet discovered at once does not
poll in lock-step. The collector is also the discovery sink: upserts start
lanes, deletes cancel and await them, in the order discovery reports them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from datalayer.config import CollectorSettings, SourceBinding
from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.plugin import PollingDataSource, PushDataSource
from datalayer.store import EndpointStore

log = logging.getLogger(__name__)


class CollectorObserver(Protocol):
    """Hooks for self-metrics; the core does not know how they are exported."""

    def on_poll(self, source_type: str, seconds: float, error: str | None) -> None: ...

    def on_extract_errors(self, source_type: str, count: int, extractor_type: str = "") -> None:
        """`count` fields the extractor (of `extractor_type`) could not read in one payload."""

    def on_state_change(self, name: str, stale: bool, reason: str) -> None: ...


class _NullObserver:
    def on_poll(self, source_type: str, seconds: float, error: str | None) -> None:
        pass

    def on_extract_errors(self, source_type: str, count: int, extractor_type: str = "") -> None:
        pass

    def on_state_change(self, name: str, stale: bool, reason: str) -> None:
        pass


#: Slack on top of a polling lane's interval and timeout before it counts as stale: a lane
#: that polls on time must never be judged stale just because its interval is long.
_LANE_MARGIN = 0.25


def staleness_window(threshold: float, binding: SourceBinding) -> float:
    """How long one lane's data stays good: the configured threshold, stretched for a source
    that polls more slowly than that (`/v1/models` every 5 s under a 2 s threshold would
    otherwise be stale most of the time while perfectly healthy)."""
    if isinstance(binding.source, PushDataSource):
        return threshold
    return max(threshold, binding.interval + binding.timeout + _LANE_MARGIN)


@dataclass(slots=True)
class _Lane:
    """Collection state of one endpoint for one source."""

    binding: SourceBinding
    #: Seconds this lane's data stays good (`staleness_window`).
    window: float
    last_success: float | None = None
    error: str = "no data collected yet"
    polls: int = 0
    #: The polling task; None for an event-driven source, whose payloads arrive by themselves.
    task: asyncio.Task[None] | None = None

    def is_stale(self, now: float) -> bool:
        if self.last_success is None:
            return True
        return now - self.last_success > self.window


@dataclass(frozen=True, slots=True)
class _InheritedLane:
    """What a reload keeps of a lane whose source configuration did not change."""

    last_success: float | None
    error: str
    polls: int


@dataclass(frozen=True, slots=True)
class LaneState:
    """A read-only copy of one lane, for operators (the status page): why is it stale?"""

    source: str
    source_type: str
    #: True for an event-driven source (no polling task: payloads arrive by themselves).
    event_driven: bool
    polls: int
    #: Seconds since the last successful read; None before the first one.
    since_success: float | None
    #: The last poll's or extraction's problem; empty when the last one was clean.
    error: str
    stale: bool


class _PushSink:
    """What one event-driven source delivers into: its binding's lanes."""

    def __init__(self, collector: Collector, binding: SourceBinding) -> None:
        self.collector = collector
        self.binding = binding

    def deliver(self, endpoint_name: str, payload: Any) -> bool:
        return self.collector._deliver(self.binding, endpoint_name, payload)


class _ScopedSink:
    """One discovery's view of the collector: it removes only what it reported itself, so
    several discoveries can feed one store (a DNS name for the vLLM pool, a file for the rest)."""

    def __init__(self, collector: Collector, owner: str) -> None:
        self.collector = collector
        self.owner = owner
        self.owned: set[str] = set()

    async def upsert(self, spec: EndpointSpec) -> None:
        self.owned.add(spec.name)
        self.collector._owners.setdefault(spec.name, set()).add(self.owner)
        await self.collector.upsert(spec)

    async def delete(self, name: str) -> None:
        self.owned.discard(name)
        owners = self.collector._owners.get(name)
        if owners is not None:
            owners.discard(self.owner)
            if owners:
                return  # another discovery still reports it
            del self.collector._owners[name]
        await self.collector.delete(name)

    async def replace_all(self, specs: Sequence[EndpointSpec]) -> None:
        wanted = {spec.name for spec in specs}
        for name in sorted(self.owned - wanted):
            await self.delete(name)
        for spec in specs:
            await self.upsert(spec)

    def mark_synced(self) -> None:
        self.collector._discovery_synced(self.owner)


class Collector:
    """Owns every collection task; implements the discovery sink."""

    def __init__(
        self,
        store: EndpointStore,
        bindings: Sequence[SourceBinding],
        settings: CollectorSettings,
        observer: CollectorObserver | None = None,
        max_endpoints: int = 50_000,
    ) -> None:
        self.store = store
        self.max_endpoints = max_endpoints
        self.bindings = list(bindings)
        self.settings = settings
        self.observer: CollectorObserver = observer or _NullObserver()
        self.synced = asyncio.Event()
        #: endpoint name -> binding index -> lane
        self._lanes: dict[str, dict[int, _Lane]] = {}
        self._background: list[asyncio.Task[None]] = []
        self._closed = False
        #: endpoint name -> the discoveries reporting it (scoped sinks only)
        self._owners: dict[str, set[str]] = {}
        self._expected_owners: set[str] = set()
        self._synced_owners: set[str] = set()
        self._pruned = False
        #: (binding index, endpoint name) -> state carried over from the previous collector.
        self._inherited: dict[tuple[int, str], _InheritedLane] = {}

    def inherit(self, previous: Collector) -> int:
        """Carry lane state over from the collector this one replaces (a reload).

        Only for sources whose configuration is unchanged (same plugin types, names and
        parameters, same extractors, timing and selector): their endpoints keep their
        last success and stay fresh across the reload instead of all turning stale
        until the first poll. Returns the number of lanes carried over.
        """
        signatures = {_signature(b): i for i, b in enumerate(self.bindings)}
        carried = 0
        for name, lanes in previous._lanes.items():
            for lane in lanes.values():
                index = signatures.get(_signature(lane.binding))
                if index is None:
                    continue
                self._inherited[(index, name)] = _InheritedLane(
                    lane.last_success, lane.error, lane.polls
                )
                carried += 1
        return carried

    def start(self) -> None:
        """Run event-driven sources and the staleness sweep for them (polling lanes check
        their own staleness after each poll)."""
        for binding in self.bindings:
            if isinstance(binding.source, PushDataSource):
                source = binding.source
                self._background.append(
                    asyncio.create_task(
                        _log_failure(source.run(_PushSink(self, binding)), source.name),
                        name=f"push source {source.name}",
                    )
                )
        if any(isinstance(b.source, PushDataSource) for b in self.bindings):
            self._background.append(asyncio.create_task(self._sweep(), name="staleness sweep"))

    # --- discovery sink ---

    async def upsert(self, spec: EndpointSpec) -> None:
        if self._closed:
            return
        problem = spec_problem(spec)
        if problem:
            log.warning(
                "endpoint %.253s refused: %s",
                spec.name,
                problem,
                extra={"endpoint": spec.name[:253]},
            )
            return
        if self.store.get(spec.name) is None and len(self.store) >= self.max_endpoints:
            log.warning(
                "endpoint %s refused: the limit of %d endpoints is reached",
                spec.name,
                self.max_endpoints,
                extra={"endpoint": spec.name},
            )
            return
        self.store.upsert(spec)
        lanes = self._lanes.setdefault(spec.name, {})
        wanted = {
            i for i, binding in enumerate(self.bindings) if binding.selector.matches(spec.labels)
        }
        # A relabel keeps the lanes whose source still applies: they read the spec each tick.
        dropped = [lanes.pop(i) for i in list(lanes) if i not in wanted]
        loop = asyncio.get_running_loop()
        added = [i for i in sorted(wanted) if i not in lanes]
        threshold = self.settings.staleness_threshold
        for i in added:
            binding = self.bindings[i]
            lane = _Lane(binding, staleness_window(threshold, binding))
            carried = self._inherited.pop((i, spec.name), None)
            if carried is not None:
                lane.last_success, lane.error, lane.polls = (
                    carried.last_success,
                    carried.error,
                    carried.polls,
                )
            lanes[i] = lane
            if isinstance(lane.binding.source, PollingDataSource):
                lane.task = asyncio.create_task(
                    self._run(spec.name, lane),
                    name=f"collect {spec.name} {lane.binding.source.name}",
                )
        if dropped or added:
            self._push_membership(
                {lane.binding for lane in dropped} | {self.bindings[i] for i in added}
            )
        if not lanes:
            self.store.set_status(
                spec.name, stale=True, last_error="no source selects this endpoint"
            )
        await _cancel_and_wait([lane.task for lane in dropped if lane.task is not None])
        if dropped:
            self._refresh_status(spec.name, loop.time())

    async def delete(self, name: str) -> None:
        lanes = self._lanes.pop(name, None)
        self.store.remove(name)
        if lanes:
            self._push_membership({lane.binding for lane in lanes.values()})
            await _cancel_and_wait([lane.task for lane in lanes.values() if lane.task is not None])

    async def replace_all(self, specs: Sequence[EndpointSpec]) -> None:
        wanted = {spec.name for spec in specs}
        # The store too: after a reload it holds endpoints this collector never had lanes for.
        for name in [n for n in {*self._lanes, *self.store.names()} if n not in wanted]:
            await self.delete(name)
        for spec in specs:
            await self.upsert(spec)

    def mark_synced(self) -> None:
        self.synced.set()

    def sink_for(self, owner: str) -> _ScopedSink:
        """A sink for one of several discoveries; `synced` is set once all of them synced."""
        self._expected_owners.add(owner)
        return _ScopedSink(self, owner)

    def _discovery_synced(self, owner: str) -> None:
        self._synced_owners.add(owner)
        if self._synced_owners < self._expected_owners or self._pruned:
            return
        self._pruned = True
        # Endpoints no discovery claims (left by a configuration before a reload) go now.
        for name in [n for n in self.store.names() if n not in self._owners]:
            self._background.append(asyncio.create_task(self.delete(name), name=f"prune {name}"))
        self.synced.set()

    # --- lifecycle and reads ---

    async def close(self) -> None:
        """Cancel and await every task; the store keeps its last state."""
        self._closed = True
        tasks = []
        # The lanes' state stays readable: a reload's new collector `inherit`s from it.
        for lanes in self._lanes.values():
            for lane in lanes.values():
                if lane.task is not None:
                    tasks.append(lane.task)
                    lane.task = None
        tasks += self._background
        self._background = []
        await _cancel_and_wait(tasks)

    def task_count(self) -> int:
        lanes = (lane for lanes in self._lanes.values() for lane in lanes.values())
        return sum(1 for lane in lanes if lane.task) + len(self._background)

    def polls(self) -> int:
        return sum(lane.polls for lanes in self._lanes.values() for lane in lanes.values())

    def lane_states(self, name: str) -> list[LaneState]:
        """The collection state of each source's lane for endpoint `name` (none if unknown)."""
        now = asyncio.get_running_loop().time()
        return [
            LaneState(
                source=lane.binding.source.name,
                source_type=lane.binding.source.type_name,
                event_driven=lane.task is None,
                polls=lane.polls,
                since_success=None if lane.last_success is None else now - lane.last_success,
                error=lane.error,
                stale=lane.is_stale(now),
            )
            for lane in self._lanes.get(name, {}).values()
        ]

    # --- polling lanes ---

    async def _run(self, name: str, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        binding = lane.binding
        source = binding.source
        assert isinstance(source, PollingDataSource)
        interval = binding.interval
        # Spread a fleet discovered at once, but never wait long for a first read.
        await asyncio.sleep(random.uniform(0, min(interval, _MAX_START_JITTER)))
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
                self._extract_and_commit(lane, record.spec, payload)
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

    def _extract_and_commit(self, lane: _Lane, spec: EndpointSpec, payload: Any) -> None:
        update = EndpointUpdate()
        for extractor in lane.binding.extractors:
            before = len(update.errors)
            try:
                extractor.extract(payload, spec, update)
            except Exception as exc:
                update.error(extractor.name, f"extractor failed: {describe_error(exc)}")
            if len(update.errors) > before:
                self.observer.on_extract_errors(
                    lane.binding.source.type_name, len(update.errors) - before, extractor.type_name
                )
        if update.readings == 0:
            # Nothing the extractors need was in the payload (a page of unrelated metrics,
            # HELP/TYPE only): a failed read. Defaults alone ("no LoRA adapters") are not data.
            lane.error = "; ".join(update.errors) or "no wanted signal in the payload"
            return
        self.store.apply(spec.name, update, time.time(), lane.window)
        lane.error = "; ".join(update.errors)
        lane.last_success = asyncio.get_running_loop().time()

    # --- event-driven lanes ---

    def _deliver(self, binding: SourceBinding, name: str, payload: Any) -> bool:
        lanes = self._lanes.get(name)
        index = self.bindings.index(binding)
        lane = lanes.get(index) if lanes else None
        record = self.store.get(name)
        if lane is None or record is None:
            return False
        lane.polls += 1
        self._extract_and_commit(lane, record.spec, payload)
        self._refresh_status(name, asyncio.get_running_loop().time())
        return True

    def _push_membership(self, bindings: set[SourceBinding]) -> None:
        """Tell event-driven sources which endpoints are theirs now."""
        for binding in bindings:
            if not isinstance(binding.source, PushDataSource):
                continue
            index = self.bindings.index(binding)
            members = {
                name: record.spec
                for name, lanes in self._lanes.items()
                if index in lanes and (record := self.store.get(name)) is not None
            }
            binding.source.update_endpoints(members)

    async def _sweep(self) -> None:
        """Event-driven lanes have no task to notice silence: check them periodically."""
        period = min(self.settings.staleness_threshold / 4, 0.25)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for name, lanes in list(self._lanes.items()):
                if any(lane.task is None for lane in lanes.values()):
                    self._refresh_status(name, now)

    def _refresh_status(self, name: str, now: float) -> None:
        lanes = self._lanes.get(name)
        record = self.store.get(name)
        if not lanes or record is None:
            return
        self.store.expire(name, time.time())
        stale = False
        errors: list[tuple[str, str]] = []
        for lane in lanes.values():
            lane_stale = lane.is_stale(now)
            stale = stale or lane_stale
            # A silent event-driven source has no failed poll to blame: say what is missing.
            error = lane.error or (f"no data for over {lane.window:g}s" if lane_stale else "")
            if error:
                errors.append((lane.binding.source.name, error))
        if len(lanes) == 1:
            last_error = errors[0][1] if errors else ""
        else:
            last_error = "; ".join(f"{source}: {error}" for source, error in errors)
        if record.expired:
            unread = "not read within the staleness window: " + ", ".join(
                _expired_label(key) for key in sorted(record.expired)
            )
            last_error = f"{last_error}; {unread}" if last_error else unread
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


#: A lane's first poll comes within this many seconds (or its interval, if shorter).
_MAX_START_JITTER = 1.0
#: What one discovered endpoint may bring: k8s limits names to 253 and labels far below this.
MAX_NAME_BYTES = 253
MAX_LABELS = 64
MAX_LABEL_BYTES = 16 * 1024


def spec_problem(spec: EndpointSpec) -> str:
    """Why an endpoint from discovery is refused (a cap it exceeds), or ""."""
    if not spec.name or len(spec.name.encode()) > MAX_NAME_BYTES:
        return f"name empty or longer than {MAX_NAME_BYTES} bytes (cap hit)"
    if len(spec.labels) > MAX_LABELS:
        return f"{len(spec.labels)} labels, more than the cap of {MAX_LABELS}"
    size = sum(len(k) + len(v) for k, v in spec.labels.items())
    if size > MAX_LABEL_BYTES:
        return f"labels of {size} bytes, more than the cap of {MAX_LABEL_BYTES}"
    return ""


def _expired_label(key: str) -> str:
    if key.startswith("custom/"):
        return f"custom[{key[7:]}]"
    if key.startswith("attr/"):
        return f"attribute {key[5:]}"
    return key


def _signature(binding: SourceBinding) -> tuple[object, ...]:
    """What decides whether a reloaded source is the same source (plugin params compare by
    value: they are dataclasses decoded from YAML)."""

    def plugin(p: Any) -> tuple[object, ...]:
        return (type(p), p.name, repr(p.params))

    return (
        plugin(binding.source),
        tuple(plugin(e) for e in binding.extractors),
        binding.interval,
        binding.timeout,
        repr(binding.selector),
    )


async def _log_failure(coro: Coroutine[Any, Any, None], source_name: str) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("event-driven source %r stopped; its endpoints will turn stale", source_name)


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
