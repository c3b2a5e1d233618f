"""The subscription hub: turns store commits into per-subscriber event batches.

Design, in three rules:
- A commit only marks the endpoint dirty (O(1)); the fan-out to subscribers
  happens in one batch per `batch_window`, so the collector never waits on a
  subscriber.
- A subscriber keeps a *set* of pending endpoint names, not a queue of events:
  however slow it is, its backlog is bounded by the number of endpoints, and
  when it reads it gets the latest state of each (updates coalesce).
- Events are computed when sent, against the names the subscriber has been
  told about (`known`): an endpoint that left the store or stopped matching
  the selector yields REMOVED exactly when the subscriber knew it, so a
  REMOVED is never lost and never invented.

SYNCED means "this is the whole current state": a stream sends its initial
state only once `Hub.ready` (the current collector's discovery sync) is set,
so a Watch opened right after start or during a reload never gets a SYNCED
with a partial or empty snapshot that would wipe a reconnecting mirror.

Fan-out cost: subscribers are grouped by equal `WatchFilter`s. A flush
evaluates each distinct filter once per dirty endpoint, and whether a filter
selects an endpoint is remembered per group until the endpoint's spec
changes, so a subscriber's drain is a few dict lookups per name. Subscribers
with equal filters that keep up drain identical batches right after the same
flush, which lets the server serialize each batch once per filter.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from datalayer.model import ALWAYS_SENT_PARTS, EndpointSpec
from datalayer.selector import EVERYTHING, Selector
from datalayer.store import REMOVED_PART, EndpointRecord, EndpointStore


class EventKind(enum.Enum):
    ADDED = 1
    UPDATED = 2
    REMOVED = 3


class Event(NamedTuple):
    kind: EventKind
    name: str
    #: The current record for ADDED/UPDATED; None for REMOVED.
    record: EndpointRecord | None


@dataclass(slots=True)
class Batch:
    """One message's worth of events, with the revision they bring the subscriber to."""

    events: list[Event]
    revision: int
    synced: bool = False
    full_snapshot: bool = False
    #: Where a client that received only part of this batch can safely resume from: the
    #: revision the subscriber was at before it (0 for a full snapshot). The encoder puts it
    #: on every response but the last when it splits a large batch over several messages.
    base_revision: int = 0


@dataclass(frozen=True)
class WatchFilter:
    """Which endpoints and which parts of them a subscriber wants."""

    selector: Selector = EVERYTHING
    names: frozenset[str] = frozenset()
    #: Attribute keys and/or `metrics`; empty means every part.
    parts: frozenset[str] = frozenset()
    #: Only endpoints whose `owner` is this (a replica's own shard); None: any owner.
    owned_by: str | None = None

    def wants_endpoint(self, record: EndpointRecord) -> bool:
        if self.names and record.spec.name not in self.names:
            return False
        if self.owned_by is not None and record.owner != self.owned_by:
            return False
        return self.selector.matches(record.spec.labels)

    def wants_parts(self, parts: frozenset[str]) -> bool:
        if not self.parts:
            return True
        return not parts.isdisjoint(self.parts) or not parts.isdisjoint(_ALWAYS)


_ALWAYS = ALWAYS_SENT_PARTS | {REMOVED_PART}


@dataclass
class HubStats:
    batches_sent: int = 0
    events_sent: int = 0
    #: Updates folded into an already pending one (a slow subscriber's saving).
    coalesced: int = 0


class Subscriber:
    """One Watch stream's view: what it was told, and what it still has to be told."""

    def __init__(
        self,
        hub: Hub,
        watch_filter: WatchFilter,
        resume_revision: int,
        resume_instance_id: str,
        min_interval: float,
        heartbeat_interval: float,
    ) -> None:
        self.hub = hub
        self.filter = watch_filter
        self.min_interval = min_interval
        self.heartbeat_interval = heartbeat_interval
        self.pending: dict[str, None] = {}
        self.known: dict[str, int] = {}
        self.wake = asyncio.Event()
        self.closed = False
        #: Set with `closed`; ends the wait for the discovery sync.
        self._closing = asyncio.Event()
        #: The revision of the last batch handed out (what a resume from here is up to).
        self.sent_revision = 0
        #: The revision the initial state was taken at (-1 until then).
        self._initial_revision = -1
        #: id(spec) -> (spec, selected?), shared by every subscriber with this filter.
        self.selects: dict[int, tuple[EndpointSpec, bool]] = {}
        self._resume_revision = resume_revision
        self._resume_instance_id = resume_instance_id

    def interested(self, name: str, parts: frozenset[str]) -> bool:
        if name in self.known:
            return self.filter.wants_parts(parts)
        record = self.hub.store.get(name)
        return record is not None and self.wants_record(record)

    def mark(self, name: str) -> None:
        if name in self.pending:
            self.hub.stats.coalesced += 1
        else:
            self.pending[name] = None

    async def batches(self) -> AsyncIterator[Batch]:
        """The stream: initial state (snapshot or replay) once discovery has synced, then live
        batches until closed."""
        if not await self._wait_ready():
            return
        initial = self._initial_batch()
        self.sent_revision = self._initial_revision = initial.revision
        yield initial
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        while not self.closed:
            if not self.pending:
                try:
                    async with asyncio.timeout(self.heartbeat_interval or None):
                        await self.wake.wait()
                except TimeoutError:
                    last_sent = loop.time()
                    # Never below what was sent: the initial state read the store directly.
                    self.sent_revision = max(self.sent_revision, self.hub.covered_revision())
                    yield Batch([], self.sent_revision, base_revision=self.sent_revision)
                    continue
            self.wake.clear()
            if self.closed:
                return
            if self.min_interval:
                delay = last_sent + self.min_interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            events = self._drain()
            if events:
                last_sent = loop.time()
                self.hub.stats.batches_sent += 1
                self.hub.stats.events_sent += len(events)
                base = self.sent_revision
                self.sent_revision = max(base, self.hub.covered_revision())
                yield Batch(events, self.sent_revision, base_revision=base)

    async def _wait_ready(self) -> bool:
        """Wait for `hub.ready` (if any) unless the stream closes first; False when closed."""
        ready_of = self.hub.ready
        while not self.closed:
            # Re-read on every wake-up: a reload swaps in a new collector with a new event.
            ready = ready_of() if ready_of is not None else None
            if ready is None or ready.is_set():
                return True
            waiters = [
                asyncio.ensure_future(ready.wait()),
                asyncio.ensure_future(self._closing.wait()),
            ]
            try:
                await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        return False

    def _initial_batch(self) -> Batch:
        """Decided now, not at subscribe time: the store may have changed while the stream
        waited for the discovery sync. A resume replays the gap when the revision is this
        instance's and the history covers it; a revision ahead of the server (a client bug or
        a store that was reset) cannot be replayed and gets a full snapshot."""
        store = self.hub.store
        # Whatever was marked while waiting is covered by the state computed here.
        self.pending.clear()
        resume = self._resume_revision
        replay_names = None
        if resume and self._resume_instance_id == store.instance_id and resume <= store.revision:
            replay_names = store.changed_since(resume)
        events: list[Event] = []
        if replay_names is not None:
            # The client holds the state as of the resume revision: everything matching now
            # that existed then is known to it; the changed names are replayed.
            for record in store:
                if record.created_revision <= self._resume_revision and self.filter.wants_endpoint(
                    record
                ):
                    self.known[record.name] = record.created_revision
            for name in replay_names:
                events.extend(self._event_for(name, removed_if_unknown=True))
        else:
            filter_ = self.filter
            for record in store:
                if filter_.wants_endpoint(record):
                    events.extend(self._event_for(record.name, removed_if_unknown=False))
        self.hub.stats.events_sent += len(events)
        # One batch however large: the encoder splits it over messages by size, SYNCED last.
        return Batch(
            events,
            store.revision,
            synced=True,
            full_snapshot=replay_names is None,
            base_revision=0 if replay_names is None else resume,
        )

    def _drain(self) -> list[Event]:
        names = list(self.pending)
        self.pending.clear()
        events: list[Event] = []
        for name in names:
            events.extend(self._event_for(name, removed_if_unknown=False))
        return events

    def wants_record(self, record: EndpointRecord) -> bool:
        """`filter.wants_endpoint(record)`, remembered per spec object (specs are immutable)."""
        if self.filter.owned_by is not None:
            return self.filter.wants_endpoint(record)  # ownership moves without a new spec
        spec = record.spec
        hit = self.selects.get(id(spec))
        if hit is not None and hit[0] is spec:
            return hit[1]
        selects = self.selects
        if len(selects) > 2 * len(self.hub.store) + 64:
            selects.clear()  # specs of endpoints that left or were relabelled
        selected = selects[id(spec)] = (spec, self.filter.wants_endpoint(record))
        return selected[1]

    def _event_for(self, name: str, removed_if_unknown: bool) -> Iterable[Event]:
        record = self.hub.store.get(name)
        known_generation = self.known.get(name)
        if record is not None and self.wants_record(record):
            self.known[name] = record.created_revision
            if known_generation is None:
                return (Event(EventKind.ADDED, name, record),)
            if known_generation != record.created_revision:
                # Removed and added again between two sends: the client must drop the old one.
                return (Event(EventKind.REMOVED, name, None), Event(EventKind.ADDED, name, record))
            if record.revision <= self._initial_revision:
                return ()  # marked before the initial state was taken, which already has it
            return (Event(EventKind.UPDATED, name, record),)
        if known_generation is not None or removed_if_unknown:
            self.known.pop(name, None)
            return (Event(EventKind.REMOVED, name, None),)
        return ()


@dataclass
class Hub:
    """Fans store changes out to subscribers in batches."""

    store: EndpointStore
    batch_window: float = 0.005
    max_subscribers: int = 1000
    stats: HubStats = field(default_factory=HubStats)
    #: The current "discovery has synced" event; a stream sends its initial state (and
    #: SYNCED) only once it is set. A callable, read again while waiting, because a reload
    #: swaps in a new collector with its own event. None: no gate (tests, embedded use).
    ready: Callable[[], asyncio.Event] | None = None

    def __post_init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        #: Subscribers by filter: a flush evaluates each distinct filter once per endpoint.
        self._groups: dict[WatchFilter, list[Subscriber]] = {}
        self._dirty: dict[str, frozenset[str]] = {}
        #: The revision of the oldest change not yet flushed to subscribers (None: none).
        self._dirty_from: int | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        self.store.add_listener(self._on_change)

    def covered_revision(self) -> int:
        """The revision a live batch or heartbeat brings a subscriber up to: the store's,
        less any change still waiting for the next flush (it is in no pending set yet, so
        a client resuming from the store's revision would never be sent it)."""
        if self._dirty_from is None:
            return self.store.revision
        return self._dirty_from - 1

    def subscribe(
        self,
        watch_filter: WatchFilter,
        resume_revision: int = 0,
        resume_instance_id: str = "",
        min_interval: float = 0.0,
        heartbeat_interval: float = 0.0,
    ) -> Subscriber:
        """Register a subscriber; raises OverflowError past `max_subscribers`."""
        if len(self.subscribers) >= self.max_subscribers:
            raise OverflowError(f"too many subscribers (limit {self.max_subscribers})")
        subscriber = Subscriber(
            self,
            watch_filter,
            resume_revision,
            resume_instance_id,
            min_interval,
            heartbeat_interval,
        )
        self.subscribers.add(subscriber)
        group = self._groups.setdefault(watch_filter, [])
        if group:
            subscriber.selects = group[0].selects
        group.append(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscriber.closed = True
        subscriber.wake.set()
        subscriber._closing.set()
        if subscriber in self.subscribers:
            self.subscribers.discard(subscriber)
            group = self._groups.get(subscriber.filter)
            if group is not None:
                group.remove(subscriber)
                if not group:
                    del self._groups[subscriber.filter]

    def close(self) -> None:
        """End every stream (at shutdown)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        for subscriber in list(self.subscribers):
            self.unsubscribe(subscriber)

    def _on_change(self, name: str, parts: frozenset[str], revision: int) -> None:
        if not self.subscribers:
            return  # a new subscriber starts from a snapshot, so there is nothing to keep
        previous = self._dirty.get(name)
        self._dirty[name] = parts if previous is None else previous | parts
        if self._dirty_from is None:
            self._dirty_from = revision
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self.batch_window, self.flush)

    def flush(self) -> None:
        """Hand the dirty endpoints to every interested subscriber and wake it."""
        self._flush_handle = None
        dirty, self._dirty = self._dirty, {}
        self._dirty_from = None
        store = self.store
        stats = self.stats
        for watch_filter, group in self._groups.items():
            # Per filter, once: does it want these parts (for subscribers that know the
            # endpoint), and does it select the endpoint (for those that do not)?
            first = group[0]
            wanted: list[tuple[str, bool, bool]] = []
            for name, parts in dirty.items():
                record = store.get(name)
                selects = record is not None and first.wants_record(record)
                wanted.append((name, watch_filter.wants_parts(parts), selects))
            for subscriber in group:
                known = subscriber.known
                pending = subscriber.pending
                woke = False
                for name, wants_parts, selects in wanted:
                    if wants_parts if name in known else selects:
                        if name in pending:
                            stats.coalesced += 1
                        else:
                            pending[name] = None
                        woke = True
                if woke:
                    subscriber.wake.set()
