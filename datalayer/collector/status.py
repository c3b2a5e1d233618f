"""An endpoint's `stale` flag and `last_error`, folded from its lanes.

Stale when any lane is: a scheduler must not route on an endpoint half of whose
signals are old. `last_error` says why, per source when there are several, and
names every value that was dropped for age (unknown is never zero: the store
drops a value not read again within its lane's window, and this says which).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Protocol

from datalayer.collector.lanes import Lane
from datalayer.store import EndpointStore

log = logging.getLogger("datalayer.collector")


class StateObserver(Protocol):
    def on_state_change(self, name: str, stale: bool, reason: str) -> None: ...


def refresh_status(
    store: EndpointStore, name: str, lanes: Iterable[Lane], now: float, observer: StateObserver
) -> None:
    """Expire what aged out, then set `name`'s status from its lanes (commits only changes)."""
    record = store.get(name)
    lanes = list(lanes)
    if not lanes or record is None:
        return
    store.expire(name, time.time())
    stale = False
    errors: list[tuple[str, str]] = []
    for lane in lanes:
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
    if store.set_status(name, stale, last_error) and was_stale != stale:
        reason = last_error or "data fresh again"
        observer.on_state_change(name, stale, reason)
        log.info(
            "endpoint %s is %s: %s",
            name,
            "stale" if stale else "fresh",
            reason,
            extra={"endpoint": name, "stale": stale},
        )


def _expired_label(key: str) -> str:
    if key.startswith("custom/"):
        return f"custom[{key[7:]}]"
    if key.startswith("attr/"):
        return f"attribute {key[5:]}"
    return key
