"""One scheduler for every polling lane: a timer heap, not a task per lane.

A task per lane costs, on every tick, a sleep future, a timer handle, an
`asyncio.timeout` and a task step, for each of thousands of lanes. Here one
timer handle is armed for the earliest thing due; when it fires, every lane due
within a small batching window starts its poll (one wake-up for many lanes), and
every poll past its deadline is cancelled in the same sweep. A poll is a future
(`PollingDataSource.start_poll`), finished through a done-callback.

Isolation is what it was with tasks: a lane has at most one poll in flight, a
hung poll holds only its own lane until its deadline, and missed ticks are
skipped rather than bunched up.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable
from functools import partial
from typing import Any

from datalayer.collector.lanes import Lane, describe_error
from datalayer.model import EndpointSpec
from datalayer.plugin import PollingDataSource

#: Lanes due within this many seconds of a wake-up start in that wake-up.
BATCH_WINDOW = 0.002

#: (lane, payload or None, error or None, seconds the poll took)
ResultHandler = Callable[[Lane, Any, str | None, float], None]
#: The endpoint a lane polls now (it may have been relabelled), or None once it is gone.
SpecLookup = Callable[[str], EndpointSpec | None]


class PollScheduler:
    """Starts each polling lane's poll when due, ends it at its deadline, reports results."""

    def __init__(
        self,
        lookup: SpecLookup,
        on_result: ResultHandler,
        batch_window: float = BATCH_WINDOW,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._lookup = lookup
        self._on_result = on_result
        self._window = batch_window
        #: (due, seq, lane, poll_id when pushed): lanes waiting for their next poll.
        self._due: list[tuple[float, int, Lane, int]] = []
        #: (deadline, seq, lane, poll_id): polls in flight, by when they must end.
        self._deadlines: list[tuple[float, int, Lane, int]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._closed = False
        #: Lanes currently scheduled (for operators and leak checks).
        self.lanes = 0

    def add(self, lane: Lane, first_due: float) -> None:
        """Schedule `lane`'s first poll at loop time `first_due`."""
        lane.active = True
        lane.due = first_due
        self.lanes += 1
        self._push_due(lane)

    def remove(self, lane: Lane) -> asyncio.Future[Any] | None:
        """Stop polling `lane`. A poll in flight is cancelled, its result ignored, and
        returned so that the caller can await its end."""
        if not lane.active:
            return None
        lane.active = False
        self.lanes -= 1
        future, lane.in_flight = lane.in_flight, None
        if future is not None:
            future.cancel()
        return future

    def close(self) -> list[asyncio.Future[Any]]:
        """Stop everything; returns the polls that were in flight (cancelled) to await."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending = []
        for _, _, lane, poll_id in self._deadlines:
            if lane.poll_id == poll_id and lane.in_flight is not None:
                pending.append(lane.in_flight)
                lane.in_flight.cancel()
                lane.in_flight = None
        for _, _, lane, _ in self._due:
            lane.active = False
        self._due.clear()
        self._deadlines.clear()
        self.lanes = 0
        return pending

    # --- the timer ---

    def _push_due(self, lane: Lane) -> None:
        heapq.heappush(self._due, (lane.due, next(self._seq), lane, lane.poll_id))
        self._arm(lane.due)

    def _arm(self, when: float) -> None:
        if self._closed or when >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        now = self._loop.time()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, lane, poll_id = heapq.heappop(deadlines)
            if lane.poll_id == poll_id and lane.in_flight is not None:
                lane.timed_out = True
                lane.in_flight.cancel()  # its done-callback reports the timeout
        due = self._due
        horizon = now + self._window
        while due and due[0][0] <= horizon:
            _, _, lane, poll_id = heapq.heappop(due)
            if lane.active and lane.poll_id == poll_id and lane.in_flight is None:
                self._start(lane, now)
        # Deadlines of polls that already finished are dropped here, not when they finish
        # (no search of the heap); they must not cost a wake-up of their own.
        while deadlines and not _live(deadlines[0]):
            heapq.heappop(deadlines)
        if due:
            self._arm(due[0][0])
        if deadlines:
            self._arm(deadlines[0][0])

    # --- one poll ---

    def _start(self, lane: Lane, now: float) -> None:
        spec = self._lookup(lane.name)
        if spec is None:
            lane.active = False
            self.lanes -= 1
            return
        lane.poll_id += 1
        lane.started = now
        lane.timed_out = False
        source = lane.binding.source
        assert isinstance(source, PollingDataSource)
        try:
            future = source.start_poll(spec)
        except Exception as exc:  # a source that fails before it even starts
            future = self._loop.create_future()
            future.set_exception(exc)
        lane.in_flight = future
        future.add_done_callback(partial(self._finished, lane, lane.poll_id))
        deadline = now + lane.binding.timeout
        heapq.heappush(self._deadlines, (deadline, next(self._seq), lane, lane.poll_id))
        self._arm(deadline)

    def _finished(self, lane: Lane, poll_id: int, future: asyncio.Future[Any]) -> None:
        if not lane.active or lane.poll_id != poll_id:
            if not future.cancelled():
                future.exception()  # retrieved: a dropped lane's late failure is not news
            return
        lane.in_flight = None
        now = self._loop.time()
        payload: Any = None
        error: str | None = None
        if future.cancelled():
            error = (
                f"poll timed out after {lane.binding.timeout:g}s"
                if lane.timed_out
                else "poll cancelled"
            )
        else:
            exc = future.exception()
            if exc is None:
                payload = future.result()
            else:
                error = describe_error(exc)
        try:
            self._on_result(lane, payload, error, now - lane.started)
        finally:
            if lane.active and not self._closed:
                interval = lane.binding.interval
                lane.due = max(lane.due + interval, now)  # missed ticks are skipped
                self._push_due(lane)


def _live(entry: tuple[float, int, Lane, int]) -> bool:
    """Whether a deadline entry still concerns a poll in flight."""
    lane = entry[2]
    return lane.poll_id == entry[3] and lane.in_flight is not None
