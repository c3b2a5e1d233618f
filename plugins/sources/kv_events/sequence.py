"""Per-subscription sequence tracking: what a batch's `seq` says about what was missed.

Kept apart from the sockets so the rules (first batch, in order, gap, restart,
replay accounting) are plain code with plain tests.
"""

from __future__ import annotations

from enum import Enum

from plugins.sources.kv_events.payload import SequenceStats


class Step(Enum):
    NEXT = "next"  # the expected batch
    FIRST = "first"  # the first batch since subscribing: a baseline, not a gap
    GAP = "gap"  # batches missing before this one
    STALE = "stale"  # already applied (a replay overlap, a duplicate): skip
    RESTART = "restart"  # the sequence went back: the engine restarted


def classify(stats: SequenceStats, seq: int) -> Step:
    """What a batch numbered `seq` is, given what was applied so far."""
    last = stats.last_seq
    if last < 0:
        return Step.FIRST
    if seq == last + 1:
        return Step.NEXT
    if seq > last + 1:
        return Step.GAP
    if seq == 0 or last - seq > 1_000_000:
        # vLLM numbers from 0 at start-up; a far jump back is a new publisher, not a dup.
        return Step.RESTART
    return Step.STALE
