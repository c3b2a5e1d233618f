"""What `kv-events-data-source` hands its extractors: one pod's new event batches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from plugins.sources.kv_events.wire import EventBatch


@dataclass(slots=True)
class SequenceStats:
    """One subscription's sequence bookkeeping, cumulative since it was opened."""

    #: The last sequence number applied (-1: none yet).
    last_seq: int = -1
    #: Times a batch arrived with sequence numbers missing before it.
    gaps: int = 0
    #: Sequence numbers never received (neither live nor from the replay endpoint).
    missed: int = 0
    #: Batches recovered from the replay endpoint.
    replayed: int = 0
    #: Messages or events that did not decode, broke a cap, or had bad frames.
    malformed: int = 0
    #: Times the sequence went backwards (the engine restarted: its cache is empty).
    restarts: int = 0

    def as_attribute(self) -> dict[str, int]:
        return {
            "lastSeq": self.last_seq,
            "gaps": self.gaps,
            "missed": self.missed,
            "replayed": self.replayed,
            "malformed": self.malformed,
            "restarts": self.restarts,
        }


@dataclass(slots=True)
class KvEventsPayload:
    """Batches of one endpoint in sequence order, as drained from its socket in one wake-up."""

    #: The model named by the topic (`kv@<pod-ip>@<model>`), "" when the topic names none.
    model: str
    batches: list[EventBatch]
    sequence: SequenceStats = field(default_factory=SequenceStats)
    #: The engine restarted before these batches: whatever the index held for it is gone.
    restarted: bool = False


@runtime_checkable
class EndpointForgetter(Protocol):
    """An extractor of this source that keeps per-endpoint state beyond the store's (an
    index): told when an endpoint leaves the source, since no payload will say so."""

    def forget_endpoint(self, name: str) -> None: ...
