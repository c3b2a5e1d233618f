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
from typing import Any, Final, NoReturn, TypeAlias

#: The typed metric fields an extractor may set (the proto's `Metrics`), in its order.
METRIC_FIELD_ORDER: Final = (
    "waiting_queue_size",
    "running_requests_size",
    "kv_cache_usage_percent",
    "cache_block_size",
    "cache_num_blocks",
    "active_models",
    "waiting_models",
    "max_active_models",
)
METRIC_FIELDS: Final = frozenset(METRIC_FIELD_ORDER)

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


class _SharedEmptyDict(dict[Any, Any]):
    """The one empty dict that every record shares for a map that is usually empty.

    It reads as `{}` (and `.clear()` or `.pop(key, None)` are harmless); filling it raises,
    so a writer first puts a dict of its own in its place (as `EndpointStore` does).
    """

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("the shared empty dict is read-only: replace it with a dict of your own")

    __setitem__ = __delitem__ = update = setdefault = popitem = __ior__ = _refuse


class _SharedEmptySet(set[Any]):
    """The one empty set that every record shares for a set that is usually empty (as above)."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("the shared empty set is read-only: replace it with a set of your own")

    def __repr__(self) -> str:
        return "set()"

    add = update = symmetric_difference_update = __ior__ = __ixor__ = _refuse


#: Shared empty containers: a default that costs no allocation per record (an empty dict is
#: 64 bytes, an empty set 216, and at 10,000 endpoints most of these maps stay empty).
SHARED_EMPTY_DICT: Final[dict[Any, Any]] = _SharedEmptyDict()
SHARED_EMPTY_SET: Final[set[Any]] = _SharedEmptySet()


def shared_empty_dict() -> dict[Any, Any]:
    """A `default_factory` that returns `SHARED_EMPTY_DICT`."""
    return SHARED_EMPTY_DICT


def shared_empty_set() -> set[Any]:
    """A `default_factory` that returns `SHARED_EMPTY_SET`."""
    return SHARED_EMPTY_SET


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """Who an endpoint is and where to reach it, as discovery reports it."""

    name: str
    address: str
    port: int
    namespace: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The address of the node the endpoint runs on (a pod's `status.hostIP`), for sources
    #: that scrape a node agent (the DCGM exporter DaemonSet); "" when discovery knows none.
    node_address: str = ""
    #: The pod this endpoint is one rank of (`<pod>-rank-<i>`); "" when not from a pod.
    pod_name: str = ""
    #: The index of the endpoint's port in its pod's target ports.
    rank: int = 0

    @property
    def host_port(self) -> str:
        """`address:port`, with IPv6 addresses bracketed as URLs need."""
        return host_port(self.address, self.port)


def host_port(address: str, port: int) -> str:
    """`address:port` for a URL or a Host header: an IPv6 address is bracketed."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


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
    #: (Read-only `SHARED_EMPTY_DICT` until a first custom value: the store swaps in a dict.)
    custom: dict[str, float] = field(default_factory=shared_empty_dict)
    #: Unix seconds of the last successful read; 0 before the first one.
    update_time: float = 0.0
    #: When each custom value was last read: a value missing from a page keeps its old time.
    custom_update_time: dict[str, float] = field(default_factory=shared_empty_dict)


@dataclass(slots=True)
class Attribute:
    """One entry of the open attribute map, with its own freshness."""

    value: AttributeData
    update_time: float


#: What one endpoint may put into the store per read; past a cap the value is refused and the
#: field gets an error naming the cap, so one hostile pod cannot bloat every client's responses.
MAX_LIST_ITEMS: Final = 1_000
MAX_TEXT_BYTES: Final = 4_096
MAX_ATTRIBUTE_BYTES: Final = 64 * 1024
MAX_CUSTOM_KEYS: Final = 256
MAX_ATTRIBUTE_KEYS: Final = 256
MAX_KEY_BYTES: Final = 256


class EndpointUpdate:
    """What one collection tick read from one endpoint, handed to every extractor.

    Extractors only add to it; the store then commits what actually changed.
    A field an extractor could not read gets an error instead of a value, so
    the old value stays (partial success, as upstream) until it ages out.

    A value set with `default=True` (no LoRA family: "no adapters") is stored but
    is not a *reading*: a payload that yields only defaults read nothing, and
    the collector treats it as a failed read.
    """

    __slots__ = ("attributes", "custom", "errors", "metrics", "readings")

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}
        self.custom: dict[str, float] = {}
        self.attributes: dict[str, AttributeData] = {}
        self.errors: list[str] = []
        #: How many values were actually read from the payload (defaults excluded).
        self.readings = 0

    def set_metric(self, field_name: str, value: Any, *, default: bool = False) -> None:
        if field_name not in METRIC_FIELDS:
            raise KeyError(f"unknown metric field {field_name!r}")
        if isinstance(value, tuple):
            problem = _list_problem(value)
            if problem:
                self.error(field_name, problem)
                return
        self.metrics[field_name] = value
        if not default:
            self.readings += 1

    def set_custom(self, key: str, value: float) -> None:
        problem = _key_problem(key, self.custom, MAX_CUSTOM_KEYS)
        if problem:
            self.error(f"custom[{key[:64]}]", problem)
            return
        self.custom[key] = value
        self.readings += 1

    def set_attribute(self, key: str, value: AttributeData, *, default: bool = False) -> None:
        if key == METRICS_PART:
            raise KeyError(f"attribute key {key!r} is reserved for the typed metrics")
        problem = _key_problem(key, self.attributes, MAX_ATTRIBUTE_KEYS) or _value_problem(value)
        if problem:
            self.error(key[:64], problem)
            return
        self.attributes[key] = value
        if not default:
            self.readings += 1

    def error(self, what: str, message: str) -> None:
        self.errors.append(f"{what}: {message}")

    def is_empty(self) -> bool:
        return not (self.metrics or self.custom or self.attributes)


def _key_problem(key: str, present: Mapping[str, object], max_keys: int) -> str:
    if len(key.encode()) > MAX_KEY_BYTES:
        return f"key longer than {MAX_KEY_BYTES} bytes (cap hit)"
    if key not in present and len(present) >= max_keys:
        return f"more than {max_keys} keys in one read (cap hit)"
    return ""


def _list_problem(items: tuple[str, ...]) -> str:
    if len(items) > MAX_LIST_ITEMS:
        return f"{len(items)} items, more than the cap of {MAX_LIST_ITEMS}"
    for item in items:
        if len(item) > MAX_TEXT_BYTES:
            return f"an item longer than the cap of {MAX_TEXT_BYTES} bytes"
    return ""


def _value_problem(value: AttributeData) -> str:
    """Why `value` is too big for the store, or "" (strings and lists cheaply, objects by JSON)."""
    if isinstance(value, str):
        if len(value) > MAX_ATTRIBUTE_BYTES:
            return f"{len(value)} characters, more than the cap of {MAX_ATTRIBUTE_BYTES}"
        return ""
    if isinstance(value, tuple):
        return _list_problem(value)
    if isinstance(value, dict | list):
        size = _json_size(value, MAX_ATTRIBUTE_BYTES + 1)
        if size > MAX_ATTRIBUTE_BYTES:
            return f"object larger than the cap of {MAX_ATTRIBUTE_BYTES} bytes"
    return ""


def _json_size(value: Any, limit: int) -> int:
    """An estimate of `value`'s JSON size that stops counting once past `limit`."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 3
        elif isinstance(item, dict):
            total += 2
            for k, v in item.items():
                total += len(str(k)) + 4
                stack.append(v)
        elif isinstance(item, list | tuple):
            total += 2
            stack.extend(item)
        else:
            total += 8
    return total


def same_value(old: object, new: object) -> bool:
    """Equality that treats NaN as equal to NaN, so a NaN gauge is not a change every tick."""
    if old == new:
        return True
    return isinstance(old, float) and isinstance(new, float) and math.isnan(old) and math.isnan(new)
