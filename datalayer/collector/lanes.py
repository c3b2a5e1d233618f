"""Lanes: the collection state of one endpoint for one source, and how stale it may get.

A lane is plain data. The scheduler (`schedule.py`) drives polling lanes, event-driven
sources feed theirs, and `status.py` folds an endpoint's lanes into its `stale` flag
and `last_error`. Keeping the state apart from both is what lets a reload carry a
lane over to the new collector (`InheritedLane`).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

from datalayer.notifications import affects_staleness
from datalayer.plugin import PushDataSource
from datalayer.wiring import SourceBinding

#: Slack on top of a polling lane's interval and timeout before it counts as stale: a lane
#: that polls on time must never be judged stale just because its interval is long.
LANE_MARGIN = 0.25


def staleness_window(threshold: float, binding: SourceBinding) -> float:
    """How long one lane's data stays good: the configured threshold, stretched for a source
    that polls more slowly than that (`/v1/models` every 5 s under a 2 s threshold would
    otherwise be stale most of the time while perfectly healthy)."""
    if not affects_staleness(binding.source):
        return math.inf  # notification sources: events, not readings (never stale)
    if isinstance(binding.source, PushDataSource):
        return threshold
    return max(threshold, binding.interval + binding.timeout + LANE_MARGIN)


class Lane:
    """Collection state of one endpoint for one source."""

    __slots__ = (
        "active",
        "binding",
        "due",
        "error",
        "in_flight",
        "last_success",
        "name",
        "poll_id",
        "polls",
        "started",
        "timed_out",
        "window",
    )

    def __init__(self, name: str, binding: SourceBinding, window: float) -> None:
        self.name = name
        self.binding = binding
        #: Seconds this lane's data stays good (`staleness_window`).
        self.window = window
        #: Loop time of the last successful read; None before the first one.
        self.last_success: float | None = None
        self.error = "no data collected yet"
        self.polls = 0
        # Scheduling state, owned by the scheduler (polling lanes only).
        #: False once the lane is dropped: late callbacks of its last poll are ignored.
        self.active = True
        #: Loop time of the next poll.
        self.due = 0.0
        #: The poll in flight (at most one per lane), or None.
        self.in_flight: asyncio.Future[Any] | None = None
        #: Numbers polls, so a timeout or a result can tell it still concerns this poll.
        self.poll_id = 0
        self.started = 0.0
        self.timed_out = False

    @property
    def event_driven(self) -> bool:
        return isinstance(self.binding.source, PushDataSource)

    def is_stale(self, now: float) -> bool:
        if self.window == math.inf:
            return False
        if self.last_success is None:
            return True
        return now - self.last_success > self.window


@dataclass(frozen=True, slots=True)
class LaneState:
    """A read-only copy of one lane, for operators (the status page): why is it stale?"""

    source: str
    source_type: str
    #: True for an event-driven source (payloads arrive by themselves, nothing is polled).
    event_driven: bool
    polls: int
    #: Seconds since the last successful read; None before the first one.
    since_success: float | None
    #: The last poll's or extraction's problem; empty when the last one was clean.
    error: str
    stale: bool

    @classmethod
    def of(cls, lane: Lane, now: float) -> LaneState:
        last = lane.last_success
        return cls(
            source=lane.binding.source.name,
            source_type=lane.binding.source.type_name,
            event_driven=lane.event_driven,
            polls=lane.polls,
            since_success=None if last is None else now - last,
            error=lane.error,
            stale=lane.is_stale(now),
        )


@dataclass(frozen=True, slots=True)
class InheritedLane:
    """What a reload keeps of a lane whose source configuration did not change."""

    last_success: float | None
    error: str
    polls: int
    #: When the old lane's next poll was due: the new lane keeps the rhythm, so an inherited
    #: lane is not left waiting a fresh start's jitter on top of its age.
    due: float

    def apply_to(self, lane: Lane) -> None:
        lane.last_success, lane.error, lane.polls = self.last_success, self.error, self.polls


def binding_signature(binding: SourceBinding) -> tuple[object, ...]:
    """What decides whether a reloaded source is the same source (plugin parameters compare by
    their repr: they are dataclasses decoded from YAML)."""

    def plugin(p: Any) -> tuple[object, ...]:
        return (type(p), p.name, repr(p.params))

    return (
        plugin(binding.source),
        tuple(plugin(e) for e in binding.extractors),
        binding.interval,
        binding.timeout,
        repr(binding.selector),
    )


def describe_error(exc: BaseException) -> str:
    """A one-line reason that names the fault, for `last_error`."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    kind = type(exc).__name__
    return f"{kind}: {text}" if text else kind
