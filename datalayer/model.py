"""The endpoint data model shared by the store, the plugins and the server.

Identity (`EndpointSpec`) comes from discovery and is immutable; the signals
(`Metrics`, attributes, staleness) are owned by the store and change through
`EndpointUpdate`s that extractors fill in. Keeping the two apart is what lets a
relabelled endpoint keep its collector and its data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

#: Names of the typed metric fields an extractor may set (the proto's `Metrics`).
METRIC_FIELDS: Final = frozenset(
    {
        "waiting_queue_size",
        "running_requests_size",
        "kv_cache_usage_percent",
        "cache_block_size",
        "cache_num_blocks",
        "active_models",
        "waiting_models",
        "max_active_models",
    }
)

#: The typed fields that can be absent (None); the LoRA lists follow `max_active_models`.
SCALAR_METRIC_FIELDS: Final = (
    "waiting_queue_size",
    "running_requests_size",
    "kv_cache_usage_percent",
    "cache_block_size",
    "cache_num_blocks",
    "max_active_models",
)

#: The subscription part name that selects the typed metrics record.
METRICS_PART: Final = "metrics"
#: Change-set parts that every subscriber receives whatever it filters on.
IDENTITY_PART: Final = "@identity"
STATUS_PART: Final = "@status"
ALWAYS_SENT_PARTS: Final = frozenset({IDENTITY_PART, STATUS_PART})

#: A value of the open attribute map: a number, a string, a list of strings,
#: or a JSON-like structured object (dicts and lists of JSON values).
AttributeData: TypeAlias = float | str | tuple[str, ...] | dict[str, Any] | list[Any]


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """Who an endpoint is and where to reach it, as discovery reports it."""

    name: str
    address: str
    port: int
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def host_port(self) -> str:
        """`address:port`, with IPv6 addresses bracketed as URLs need."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(slots=True)
class Metrics:
    """The typed scheduler signals of one endpoint (upstream's `Metrics`).

    `None` means *not known*: never read, or not read again within the lane's
    staleness window. It is never reported as 0, because 0 is the most attractive
    value a scheduler can see (an empty queue, an empty KV cache).
    """

    waiting_queue_size: int | None = None
    running_requests_size: int | None = None
    kv_cache_usage_percent: float | None = None
    cache_block_size: int | None = None
    cache_num_blocks: int | None = None
    #: The LoRA lists are known exactly when `max_active_models` is (they are read together).
    active_models: tuple[str, ...] = ()
    waiting_models: tuple[str, ...] = ()
    max_active_models: int | None = None
    custom: dict[str, float] = field(default_factory=dict)
    #: Unix seconds of the last successful read; 0 before the first one.
    update_time: float = 0.0
    #: When each custom value was last read: a value missing from a page keeps its old time.
    custom_update_time: dict[str, float] = field(default_factory=dict)

    def known_fields(self) -> list[str]:
        """The typed fields that hold a value (the LoRA lists count with `max_active_models`)."""
        return [name for name in SCALAR_METRIC_FIELDS if getattr(self, name) is not None]


@dataclass(slots=True)
class Attribute:
    """One entry of the open attribute map, with its own freshness."""

    value: AttributeData
    update_time: float


class EndpointUpdate:
    """What one collection tick read from one endpoint, handed to every extractor.

    Extractors only add to it; the store then commits what actually changed.
    A field an extractor could not read gets an error instead of a value, so
    the old value stays (partial success, as upstream).
    """

    __slots__ = ("attributes", "custom", "errors", "metrics")

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}
        self.custom: dict[str, float] = {}
        self.attributes: dict[str, AttributeData] = {}
        self.errors: list[str] = []

    def set_metric(self, field_name: str, value: Any) -> None:
        if field_name not in METRIC_FIELDS:
            raise KeyError(f"unknown metric field {field_name!r}")
        self.metrics[field_name] = value

    def set_custom(self, key: str, value: float) -> None:
        self.custom[key] = value

    def set_attribute(self, key: str, value: AttributeData) -> None:
        if key == METRICS_PART:
            raise KeyError(f"attribute key {key!r} is reserved for the typed metrics")
        self.attributes[key] = value

    def error(self, what: str, message: str) -> None:
        self.errors.append(f"{what}: {message}")

    def is_empty(self) -> bool:
        return not (self.metrics or self.custom or self.attributes)


def same_value(old: object, new: object) -> bool:
    """Equality that treats NaN as equal to NaN, so a NaN gauge is not a change every tick."""
    if old == new:
        return True
    return isinstance(old, float) and isinstance(new, float) and math.isnan(old) and math.isnan(new)
