"""The collector: lanes for every (endpoint, source) pair, driven and judged.

It is the discovery sink (upserts add lanes, deletes drop them, in the order
discovery reports them), hands polling lanes to the one `PollScheduler`, feeds
event-driven sources' payloads into their lanes, and runs extractors and the
store commit for every payload. A source with a label `selector` only gets lanes
for the endpoints it selects.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

from datalayer.collector.lanes import (
    InheritedLane,
    Lane,
    LaneState,
    binding_signature,
    describe_error,
    staleness_window,
)
from datalayer.collector.membership import EndpointTarget, Membership, ScopedSink
from datalayer.collector.schedule import PollScheduler
from datalayer.collector.status import refresh_status
from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.notifications import affects_staleness
from datalayer.plugin import PushDataSource
from datalayer.store import EndpointStore
from datalayer.wiring import CollectorSettings, SourceBinding

log = logging.getLogger("datalayer.collector")

#: A lane's first poll comes at a random point of its first interval: a fleet discovered at once
#: is spread over the whole interval, so its first reads (and their buffers) do not all land in
#: one burst (10,000 endpoints starting within 1 s held RSS 3x higher afterwards, bench/memory).
#: What one discovered endpoint may bring: k8s limits names to 253 and labels far below this.
MAX_NAME_BYTES = 253
MAX_LABELS = 64
MAX_LABEL_BYTES = 16 * 1024


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


class _PushSink:
    """What one event-driven source delivers into: its binding's lanes."""

    def __init__(self, collector: Collector, index: int) -> None:
        self._collector = collector
        self._index = index

    def deliver(self, endpoint_name: str, payload: Any) -> bool:
        return self._collector.deliver(self._index, endpoint_name, payload)


class Collector:
    """Owns every lane and every collection task; implements the discovery sink."""

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
        self._lanes: dict[str, dict[int, Lane]] = {}
        self._background: list[asyncio.Task[None]] = []
        self._closed = False
        self._membership = Membership(self, self._all_discoveries_synced)
        #: (binding index, endpoint name) -> state carried over from the previous collector.
        self._inherited: dict[tuple[int, str], InheritedLane] = {}
        self._scheduler: PollScheduler | None = None
        #: The running loop, looked up once (`get_running_loop` costs a getpid per call).
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start the poll scheduler, the event-driven sources and their staleness sweep."""
        self._poller()
        for index, binding in enumerate(self.bindings):
            if isinstance(binding.source, PushDataSource):
                source = binding.source
                self._background.append(
                    asyncio.create_task(
                        _log_failure(source.run(_PushSink(self, index)), source.name),
                        name=f"push source {source.name}",
                    )
                )
        if any(isinstance(b.source, PushDataSource) for b in self.bindings):
            self._background.append(asyncio.create_task(self._sweep(), name="staleness sweep"))

    def inherit(self, previous: Collector) -> int:
        """Carry lane state over from the collector this one replaces (a reload).

        Only for sources whose configuration is unchanged (same plugin types, names and
        parameters, same extractors, timing and selector): their endpoints keep their
        last success and stay fresh across the reload instead of all turning stale
        until the first poll. Returns the number of lanes carried over.
        """
        signatures = {binding_signature(b): i for i, b in enumerate(self.bindings)}
        carried = 0
        for name, lanes in previous._lanes.items():
            for lane in lanes.values():
                index = signatures.get(binding_signature(lane.binding))
                if index is None:
                    continue
                self._inherited[(index, name)] = InheritedLane(
                    lane.last_success, lane.error, lane.polls, lane.due
                )
                carried += 1
        return carried

    # --- discovery sink ---

    async def upsert(self, spec: EndpointSpec) -> None:
        if self._closed:
            return
        problem = spec_problem(spec)
        if problem:
            log.warning(
                "endpoint %.253s refused: %s", spec.name, problem, extra={"endpoint": spec.name}
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
        previous = self.store.get(spec.name)
        changed = previous is not None and previous.spec != spec
        self.store.upsert(spec)
        lanes = self._lanes.setdefault(spec.name, {})
        wanted = {
            i for i, binding in enumerate(self.bindings) if binding.selector.matches(spec.labels)
        }
        # A relabel keeps the lanes whose source still applies: they read the spec each poll.
        dropped = [lanes.pop(i) for i in list(lanes) if i not in wanted]
        added = [i for i in sorted(wanted) if i not in lanes]
        ending = [self._drop(lane) for lane in dropped]
        for i in added:
            lanes[i] = self._new_lane(spec.name, i)
        # A changed spec (a relabel, a new node address) is news to event-driven sources too:
        # an endpoint-notification-source reports it as add-or-update.
        kept = {lane.binding for lane in lanes.values()} if changed else set()
        if dropped or added or kept:
            self._push_membership(
                {lane.binding for lane in dropped} | {self.bindings[i] for i in added} | kept
            )
        if not lanes:
            self.store.set_status(
                spec.name, stale=True, last_error="no source selects this endpoint"
            )
        elif dropped:
            self._refresh(spec.name)
        await _cancel_and_wait([f for f in ending if f is not None])

    async def delete(self, name: str) -> None:
        lanes = self._lanes.pop(name, None)
        self.store.remove(name)
        if lanes:
            ending = [self._drop(lane) for lane in lanes.values()]
            self._push_membership({lane.binding for lane in lanes.values()})
            await _cancel_and_wait([f for f in ending if f is not None])

    async def replace_all(self, specs: Sequence[EndpointSpec]) -> None:
        wanted = {spec.name for spec in specs}
        # The store too: after a reload it holds endpoints this collector never had lanes for.
        for name in [n for n in {*self._lanes, *self.store.names()} if n not in wanted]:
            await self.delete(name)
        for spec in specs:
            await self.upsert(spec)

    def mark_synced(self) -> None:
        self.synced.set()

    async def release(self, name: str) -> None:
        """Stop collecting `name` but keep its record: another replica collects it now and
        its state keeps coming from there (a shard handoff, not a removal)."""
        lanes = self._lanes.pop(name, None)
        if lanes:
            ending = [self._drop(lane) for lane in lanes.values()]
            self._push_membership({lane.binding for lane in lanes.values()})
            await _cancel_and_wait([f for f in ending if f is not None])

    def route_discovery(self, target: EndpointTarget) -> None:
        """Send what discovery reports through `target` (a replica group's shard filter,
        which calls back `upsert`/`delete` for what this replica owns) instead of here."""
        self._membership.target = target

    def collects(self, name: str) -> bool:
        """Whether this collector has lanes for `name`."""
        return name in self._lanes

    def sink_for(self, owner: str) -> ScopedSink:
        """A sink for one of several discoveries; `synced` is set once all of them synced."""
        return self._membership.sink(owner)

    def _all_discoveries_synced(self, claimed: set[str]) -> None:
        # Endpoints no discovery claims (left by a configuration before a reload) go now.
        for name in [n for n in self.store.names() if n not in claimed]:
            self._background.append(asyncio.create_task(self.delete(name), name=f"prune {name}"))
        self.synced.set()

    # --- lifecycle and reads ---

    async def close(self) -> None:
        """Cancel and await every poll and task; the store keeps its last state, and the
        lanes stay readable (a reload's new collector `inherit`s from them)."""
        self._closed = True
        pending: list[asyncio.Future[Any]] = []
        if self._scheduler is not None:
            pending = self._scheduler.close()
        pending += self._background
        self._background = []
        await _cancel_and_wait(pending)

    def task_count(self) -> int:
        """Tasks and polls this collector has running (a leak check: zero after `close`)."""
        in_flight = sum(
            1 for lanes in self._lanes.values() for lane in lanes.values() if lane.in_flight
        )
        return in_flight + len(self._background)

    def lane_count(self) -> int:
        return sum(len(lanes) for lanes in self._lanes.values())

    def polls(self) -> int:
        return sum(lane.polls for lanes in self._lanes.values() for lane in lanes.values())

    def lane_states(self, name: str) -> list[LaneState]:
        """The collection state of each source's lane for endpoint `name` (none if unknown)."""
        now = asyncio.get_running_loop().time()
        return [LaneState.of(lane, now) for lane in self._lanes.get(name, {}).values()]

    # --- lanes ---

    def _poller(self) -> PollScheduler:
        if self._scheduler is None:
            self._scheduler = PollScheduler(self._spec_of, self._polled)
        return self._scheduler

    def _now(self) -> float:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    def _spec_of(self, name: str) -> EndpointSpec | None:
        record = self.store.get(name)
        return None if record is None else record.spec

    def _new_lane(self, name: str, index: int) -> Lane:
        binding = self.bindings[index]
        lane = Lane(name, binding, staleness_window(self.settings.staleness_threshold, binding))
        carried = self._inherited.pop((index, name), None)
        if carried is not None:
            carried.apply_to(lane)
        if not lane.event_driven:
            now = asyncio.get_running_loop().time()
            if carried is not None:
                first = max(now, carried.due)
            else:
                first = now + random.uniform(0, binding.interval)
            self._poller().add(lane, first)
        return lane

    def _drop(self, lane: Lane) -> asyncio.Future[Any] | None:
        """Stop a lane; returns its cancelled poll, if one was in flight, to await."""
        if self._scheduler is not None and not lane.event_driven:
            return self._scheduler.remove(lane)
        return None

    def _polled(self, lane: Lane, payload: Any, error: str | None, seconds: float) -> None:
        """A polling lane's poll ended (the scheduler's result handler)."""
        lane.polls += 1
        self.observer.on_poll(lane.binding.source.type_name, seconds, error)
        if error is not None:
            lane.error = error
        else:
            spec = self._spec_of(lane.name)
            if spec is None:
                return
            self._extract_and_commit(lane, spec, payload)
        self._refresh(lane.name)

    def deliver(self, index: int, name: str, payload: Any) -> bool:
        """An event-driven source's payload for endpoint `name`; False if not its endpoint."""
        lanes = self._lanes.get(name)
        lane = lanes.get(index) if lanes else None
        record = self.store.get(name)
        if lane is None or record is None:
            return False
        lane.polls += 1
        self._extract_and_commit(lane, record.spec, payload)
        self._refresh(name)
        return True

    def _extract_and_commit(self, lane: Lane, spec: EndpointSpec, payload: Any) -> None:
        update = EndpointUpdate()
        source_type = lane.binding.source.type_name
        for extractor in lane.binding.extractors:
            before = len(update.errors)
            try:
                extractor.extract(payload, spec, update)
            except Exception as exc:
                update.error(extractor.name, f"extractor failed: {describe_error(exc)}")
            if len(update.errors) > before:
                self.observer.on_extract_errors(
                    source_type, len(update.errors) - before, extractor.type_name
                )
        if update.readings == 0 and not affects_staleness(lane.binding.source):
            # An event that an extractor only keeps state from: not a failed read.
            lane.error = "; ".join(update.errors)
            return
        if update.readings == 0:
            # Nothing the extractors need was in the payload (a page of unrelated metrics,
            # HELP/TYPE only): a failed read. Defaults alone ("no LoRA adapters") are not data.
            lane.error = "; ".join(update.errors) or "no wanted signal in the payload"
            return
        self.store.apply(spec.name, update, time.time(), lane.window)
        lane.error = "; ".join(update.errors)
        lane.last_success = self._now()

    def _refresh(self, name: str) -> None:
        lanes = self._lanes.get(name)
        if lanes:
            now = self._now()
            refresh_status(self.store, name, lanes.values(), now, self.observer)

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
        """Event-driven lanes have nothing that ends to notice silence: check them here."""
        period = min(self.settings.staleness_threshold / 4, 0.25)
        while True:
            await asyncio.sleep(period)
            for name, lanes in list(self._lanes.items()):
                if any(lane.event_driven for lane in lanes.values()):
                    self._refresh(name)


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


async def _log_failure(coro: Coroutine[Any, Any, None], source_name: str) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("event-driven source %r stopped; its endpoints will turn stale", source_name)


async def _cancel_and_wait(futures: Sequence[asyncio.Future[Any]]) -> None:
    for future in futures:
        future.cancel()
    if futures:
        await asyncio.gather(*futures, return_exceptions=True)
