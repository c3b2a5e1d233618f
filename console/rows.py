"""What an operator needs to know about one endpoint, reduced to comparable plain values.

Shared by `datalayer list/get/watch` (from the gRPC `Endpoint`) and the status page (from
the store): both must call a pod "stale" or "degraded" for the same reasons, or the two
views would disagree exactly when someone is trying to work out why a pod gets no traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from datalayer.client import metric
from datalayer.model import host_port
from datalayer.v1 import datalayer_pb2 as pb

#: No successful read within the staleness threshold: a scheduler should not pick it.
STALE: Final = "stale"
#: Fresh data, but the last poll or extraction reported a problem (partial read, one failure).
DEGRADED: Final = "degraded"
FRESH: Final = "fresh"
#: Worst first: the rows someone is looking for come to the top.
HEALTH_ORDER: Final = {STALE: 0, DEGRADED: 1, FRESH: 2}

#: Label keys that name an endpoint's engine (ours first, then upstream's fallback key).
ENGINE_LABELS: Final = ("llm-d.ai/engine-type", "inference.networking.k8s.io/engine-type")
#: KV-cache use from which the value is highlighted: a pod this full takes little new work.
KV_HIGH: Final = 0.9
#: How a value the server does not know (absent on the wire) is shown: never as 0.
UNKNOWN: Final = "-"


def health_state(stale: bool, last_error: str) -> str:
    """`stale`, `degraded` (fresh but the last read had a problem) or `fresh`."""
    if stale:
        return STALE
    return DEGRADED if last_error else FRESH


def engine_of(labels: Mapping[str, str]) -> str:
    for key in ENGINE_LABELS:
        if labels.get(key):
            return labels[key]
    return "-"


@dataclass(frozen=True, slots=True)
class EndpointRow:
    """One endpoint as the console shows it; `age` is None before the first successful read.

    A typed value is None when it is absent on the wire (not read within the staleness
    threshold): it is shown as `-`, never as 0, and sorts after the known values of its column
    (a column sort looks for the busiest pods; the health sort already puts unread ones first).
    """

    name: str
    namespace: str
    address: str
    engine: str
    waiting: int | None
    running: int | None
    kv: float | None
    active_models: tuple[str, ...]
    waiting_models: tuple[str, ...]
    max_active_models: int | None
    age: float | None
    state: str
    last_error: str
    revision: int

    @classmethod
    def from_proto(cls, endpoint: pb.Endpoint, now: float) -> EndpointRow:
        metrics = endpoint.metrics
        updated = metrics.update_time.seconds + metrics.update_time.nanos / 1e9
        return cls(
            name=endpoint.name,
            namespace=endpoint.namespace,
            address=host_port(endpoint.address, endpoint.port),
            engine=engine_of(endpoint.labels),
            waiting=_int(metric(metrics, "waiting_queue_size")),
            running=_int(metric(metrics, "running_requests_size")),
            kv=_float(metric(metrics, "kv_cache_usage_percent")),
            active_models=tuple(metrics.active_models),
            waiting_models=tuple(metrics.waiting_models),
            max_active_models=_int(metric(metrics, "max_active_models")),
            # Clocks of client and server may differ a little: never show a negative age.
            age=max(0.0, now - updated) if updated else None,
            state=health_state(endpoint.stale, endpoint.last_error),
            last_error=endpoint.last_error,
            revision=endpoint.revision,
        )


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _largest_first(value: float | None) -> tuple[bool, float]:
    """A descending sort key; an unknown value comes after every known one."""
    return (value is None, 0.0 if value is None else -value)


SORT_KEYS: Final[dict[str, Callable[[EndpointRow], Any]]] = {
    "health": lambda r: (HEALTH_ORDER[r.state], r.name),
    "name": lambda r: r.name,
    "waiting": lambda r: (_largest_first(r.waiting), r.name),
    "running": lambda r: (_largest_first(r.running), r.name),
    "kv": lambda r: (_largest_first(r.kv), r.name),
    "age": lambda r: (-(r.age if r.age is not None else float("inf")), r.name),
}


def sort_rows(rows: Iterable[EndpointRow], key: str = "health") -> list[EndpointRow]:
    return sorted(rows, key=SORT_KEYS[key])


def count_states(rows: Iterable[EndpointRow]) -> dict[str, int]:
    counts = dict.fromkeys(HEALTH_ORDER, 0)
    for row in rows:
        counts[row.state] += 1
    return counts


def format_age(age: float | None) -> str:
    """`0.2s`, `12s`, `3m04s`, `5h02m`; `never` before the first read."""
    if age is None:
        return "never"
    if age < 10:
        return f"{age:.1f}s"
    if age < 60:
        return f"{age:.0f}s"
    if age < 3600:
        minutes, seconds = divmod(int(age), 60)
        return f"{minutes}m{seconds:02d}s"
    hours, rest = divmod(int(age), 3600)
    return f"{hours}h{rest // 60:02d}m"


def format_count(value: int | None) -> str:
    """A count, or `-` when not known (absent on the wire), which is not 0."""
    return UNKNOWN if value is None else str(value)


def format_kv(kv: float | None) -> str:
    """`42%`, or `-` when not known (absent on the wire), which is not 0%."""
    return UNKNOWN if kv is None else f"{kv * 100:.0f}%"


def format_lora(row: EndpointRow) -> str:
    """`sql-lora,chat-lora 2/2 (+1 waiting: x)`; `-` for a pod without adapters, or whose
    LoRA signals are not known (`max_active_models` absent: the lists mean nothing then)."""
    if row.max_active_models is None:
        return UNKNOWN
    if not (row.active_models or row.waiting_models or row.max_active_models):
        return "-"
    text = ",".join(row.active_models) or "none"
    if row.max_active_models:
        text += f" {len(row.active_models)}/{row.max_active_models}"
    if row.waiting_models:
        text += f" (waiting: {','.join(row.waiting_models)})"
    return text
