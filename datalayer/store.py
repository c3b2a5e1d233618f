"""The endpoint store: the one place endpoint state lives.

Every committed change bumps one global revision and reports which parts of
the endpoint changed, so the hub can tell each subscriber only what it asked
for. Everything here is synchronous and runs on the event loop thread, so any
read that does not await sees a consistent snapshot.

Freshness is kept apart from change: a poll that reads the same values again
moves `update_time` in place but is not a commit, so an idle fleet costs no
revisions and no stream traffic.

Every value read carries a deadline (the reading lane's staleness window). A
value not read again by its deadline is dropped by `expire`: a scheduler must
see "unknown", never an old number dressed up as current, and never 0.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from datalayer.model import (
    IDENTITY_PART,
    METRIC_FIELD_ORDER,
    METRIC_FIELDS,
    METRICS_PART,
    SCALAR_METRIC_FIELDS,
    SHARED_EMPTY_DICT,
    SHARED_EMPTY_SET,
    STATUS_PART,
    Attribute,
    EndpointSpec,
    EndpointUpdate,
    Metrics,
    same_value,
    shared_empty_dict,
    shared_empty_set,
)

#: Called after each commit with the endpoint name, the changed parts and the new revision.
#: Parts: `@identity`, `@status`, `metrics`, an attribute key, or `@removed`.
ChangeListener = Callable[[str, frozenset[str], int], None]

REMOVED_PART = "@removed"
_ADDED_PARTS = frozenset({IDENTITY_PART, STATUS_PART, METRICS_PART})
#: Metric fields that are lists: "unknown" is the empty list (presence follows max_active_models).
_LIST_FIELDS = METRIC_FIELDS - frozenset(SCALAR_METRIC_FIELDS)


@dataclass(slots=True)
class EndpointRecord:
    """The store's state for one endpoint. Readers must not mutate it.

    Maps that are usually empty (`attributes` without an attribute-writing extractor,
    `expired`, `metrics.custom`) start as the shared read-only empty containers of
    `datalayer.model` and get their own dict or set at their first entry: at 10,000
    endpoints an empty set each is 2 MiB.
    """

    spec: EndpointSpec
    #: Revision at which this endpoint (under this name) was added; tells re-adds apart.
    created_revision: int
    revision: int
    metrics: Metrics = field(default_factory=Metrics)
    attributes: dict[str, Attribute] = field(default_factory=shared_empty_dict)
    stale: bool = True
    last_error: str = "no data collected yet"
    #: Deadline (unix seconds) of each value read: metric field names, `custom/<key>`,
    #: `attr/<key>`. Past it the value is dropped (`EndpointStore.expire`).
    deadlines: dict[str, float] = field(default_factory=dict)
    #: The earliest deadline may be at or after this; `expire` does nothing before it.
    next_expiry: float = math.inf
    #: Values dropped for age and not read since, by their deadline key (for `last_error`).
    expired: set[str] = field(default_factory=shared_empty_set)
    #: The replica-group member that collects this endpoint ("" outside a group).
    owner: str = ""

    @property
    def name(self) -> str:
        return self.spec.name


class EndpointStore:
    """Endpoints by name, one global revision, and a bounded history of what changed."""

    def __init__(self, history_size: int = 10_000) -> None:
        #: Names this server instance; revisions mean nothing across instances.
        self.instance_id = uuid.uuid4().hex
        self.revision = 0
        self._records: dict[str, EndpointRecord] = {}
        self._listeners: list[ChangeListener] = []
        # The name of every commit, oldest first: lets a resumed watch replay its gap. Every
        # revision is one commit, so the newest entry is `revision` and the one before it
        # `revision - 1`: the revisions need not be kept (a tuple and an int per entry).
        self._history: deque[str] = deque(maxlen=history_size)

    # --- reads ---

    def get(self, name: str) -> EndpointRecord | None:
        return self._records.get(name)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[EndpointRecord]:
        return iter(list(self._records.values()))

    def names(self) -> list[str]:
        return list(self._records)

    def changed_since(self, revision: int) -> list[str] | None:
        """Names changed after `revision`, oldest first; None when history no longer covers it."""
        if revision >= self.revision:
            return []
        history = self._history
        oldest = self.revision - len(history) + 1  # the revision of history[0]
        if not history or oldest > revision + 1:
            return None
        seen: dict[str, None] = {}
        for name in itertools.islice(reversed(history), self.revision - revision):
            seen.setdefault(name, None)
        return list(reversed(seen))

    # --- writes ---

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def upsert(self, spec: EndpointSpec) -> bool:
        """Add an endpoint or change its identity (address, labels...); True if anything changed."""
        record = self._records.get(spec.name)
        if record is None:
            revision = self._bump(spec.name)
            self._records[spec.name] = EndpointRecord(spec, revision, revision)
            self._notify(spec.name, _ADDED_PARTS, revision)
            return True
        if record.spec == spec:
            return False
        record.spec = spec
        record.revision = self._bump(spec.name)
        self._notify(spec.name, frozenset({IDENTITY_PART}), record.revision)
        return True

    def remove(self, name: str) -> bool:
        if self._records.pop(name, None) is None:
            return False
        self._notify(name, frozenset({REMOVED_PART}), self._bump(name))
        return True

    def set_status(self, name: str, stale: bool, last_error: str) -> bool:
        record = self._records.get(name)
        if record is None or (record.stale == stale and record.last_error == last_error):
            return False
        record.stale = stale
        record.last_error = last_error
        record.revision = self._bump(name)
        self._notify(name, frozenset({STATUS_PART}), record.revision)
        return True

    def apply(
        self, name: str, update: EndpointUpdate, now: float, ttl: float = math.inf
    ) -> frozenset[str]:
        """Merge what a tick read; commit only real changes. Returns the changed parts.

        Each value read stays valid for `ttl` seconds unless read again (see `expire`).
        """
        record = self._records.get(name)
        if record is None:
            return frozenset()
        changed: set[str] = set()
        metrics = record.metrics
        deadlines = record.deadlines
        deadline = now + ttl
        if deadline < record.next_expiry:
            record.next_expiry = deadline
        expired = record.expired
        if update.metrics or update.custom:
            for field_name, value in update.metrics.items():
                deadlines[field_name] = deadline
                old = getattr(metrics, field_name)
                # `==` first: an unchanged value (nearly every tick) costs no call.
                if old != value and not same_value(old, value):
                    setattr(metrics, field_name, value)
                    changed.add(METRICS_PART)
            if update.custom:
                if metrics.custom is SHARED_EMPTY_DICT:
                    metrics.custom = {}
                if metrics.custom_update_time is SHARED_EMPTY_DICT:
                    metrics.custom_update_time = {}
            for key, number in update.custom.items():
                deadlines["custom/" + key] = deadline
                old = metrics.custom.get(key)
                if old is None or not same_value(old, number):
                    metrics.custom[key] = number
                    changed.add(METRICS_PART)
                metrics.custom_update_time[key] = now
            metrics.update_time = now
            if expired:
                expired.difference_update(update.metrics)
                expired.difference_update("custom/" + key for key in update.custom)
        if update.attributes and record.attributes is SHARED_EMPTY_DICT:
            record.attributes = {}
        for key, value in update.attributes.items():
            deadlines["attr/" + key] = deadline
            attribute = record.attributes.get(key)
            if attribute is None:
                record.attributes[key] = Attribute(value, now)
                changed.add(key)
            else:
                if not same_value(attribute.value, value):
                    attribute.value = value
                    changed.add(key)
                attribute.update_time = now
        if expired and update.attributes:
            expired.difference_update("attr/" + key for key in update.attributes)
        return self._commit(name, record, changed)

    def expire(self, name: str, now: float) -> frozenset[str]:
        """Drop the values of `name` not read again by their deadline; commit if any went.

        Returns the changed parts. Cheap when nothing is due: one comparison.
        """
        record = self._records.get(name)
        if record is None or now < record.next_expiry:
            return frozenset()
        changed: set[str] = set()
        metrics = record.metrics
        earliest = math.inf
        for key, deadline in list(record.deadlines.items()):
            if deadline > now:
                earliest = min(earliest, deadline)
                continue
            del record.deadlines[key]
            if record.expired is SHARED_EMPTY_SET:
                record.expired = set()
            record.expired.add(key)
            if key.startswith("custom/"):
                custom_key = key[7:]
                metrics.custom.pop(custom_key, None)
                metrics.custom_update_time.pop(custom_key, None)
                changed.add(METRICS_PART)
            elif key.startswith("attr/"):
                if record.attributes.pop(key[5:], None) is not None:
                    changed.add(key[5:])
            else:
                empty: object = () if key in _LIST_FIELDS else None
                if getattr(metrics, key) != empty:
                    setattr(metrics, key, empty)
                    changed.add(METRICS_PART)
        record.next_expiry = earliest
        return self._commit(name, record, changed)

    def set_owner(self, name: str, owner: str) -> bool:
        """Record which group member collects `name`; a change is an identity commit."""
        record = self._records.get(name)
        if record is None or record.owner == owner:
            return False
        record.owner = owner
        record.revision = self._bump(name)
        self._notify(name, frozenset({IDENTITY_PART}), record.revision)
        return True

    def put_remote(
        self,
        name: str,
        metrics: Metrics,
        attributes: dict[str, Attribute],
        stale: bool,
        last_error: str,
        owner: str,
    ) -> frozenset[str]:
        """Take the whole state of `name` as another replica (its `owner`) reports it.

        One local commit for whatever differs (update times alone move in place, as a
        re-read of equal values does); the values carry no local deadline, because their
        owner expires them and relays that. Returns the changed parts.
        """
        record = self._records.get(name)
        if record is None:
            return frozenset()
        changed: set[str] = set()
        old = record.metrics
        if not _same_metrics(old, metrics):
            changed.add(METRICS_PART)
        record.metrics = metrics
        for key in record.attributes.keys() - attributes.keys():
            changed.add(key)
        for key, attribute in attributes.items():
            current = record.attributes.get(key)
            if current is None or not same_value(current.value, attribute.value):
                changed.add(key)
        record.attributes = attributes
        record.deadlines.clear()
        record.next_expiry = math.inf
        record.expired.clear()
        if record.stale != stale or record.last_error != last_error:
            record.stale, record.last_error = stale, last_error
            changed.add(STATUS_PART)
        if record.owner != owner:
            record.owner = owner
            changed.add(IDENTITY_PART)
        return self._commit(name, record, changed)

    def _commit(self, name: str, record: EndpointRecord, changed: set[str]) -> frozenset[str]:
        """Bump the revision and tell the listeners, if anything changed; the changed parts."""
        if not changed:
            return frozenset()
        parts = frozenset(changed)
        record.revision = self._bump(name)
        self._notify(name, parts, record.revision)
        return parts

    def _bump(self, name: str) -> int:
        self.revision += 1
        self._history.append(name)
        return self.revision

    def _notify(self, name: str, parts: frozenset[str], revision: int) -> None:
        for listener in self._listeners:
            listener(name, parts, revision)


def _same_metrics(a: Metrics, b: Metrics) -> bool:
    """Equal values (update times aside: they move without a commit)."""
    return (
        all(same_value(getattr(a, f), getattr(b, f)) for f in METRIC_FIELD_ORDER)
        and a.custom == b.custom
    )
