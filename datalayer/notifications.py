"""Notification contracts: sources that deliver events, not readings (upstream's
`endpoint-notification-source` and `k8s-notification-source`, and their extractors).

A notification source is event-driven (a `PushDataSource`), but what it delivers says that
something happened (an endpoint arrived, a Kubernetes object changed), not how loaded an
endpoint is. So its lanes never make an endpoint stale, and an extractor that records nothing
for an event (one that only keeps state, like a KV-event subscriber that opens a socket per
pod) is not a failed read. The config loader checks an extractor's `input_type` against the
source's event type as for every other source: an `EndpointEvent` extractor cannot be wired
under a `k8s-notification-source`, nor a metrics extractor under either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from datalayer.model import EndpointSpec
from datalayer.plugin import Extractor, PushDataSource

#: Upstream's two event types.
EventType = Literal["add-or-update", "delete"]


class NotificationEvent:
    """What notification sources deliver; an extractor taking this takes both kinds."""

    type: EventType


@dataclass(frozen=True, slots=True)
class EndpointEvent(NotificationEvent):
    """An endpoint joined or changed (`add-or-update`), or left (`delete`)."""

    type: EventType
    #: Its metadata: name, namespace, address, node address, port, labels, pod, rank.
    endpoint: EndpointSpec


@dataclass(frozen=True, slots=True)
class GroupVersionKind:
    """A Kubernetes kind; `group` "" is the core group (`v1` `Pod`)."""

    group: str
    version: str
    kind: str

    def __str__(self) -> str:
        return f"{self.group or 'core'}/{self.version}/{self.kind}"


@dataclass(frozen=True, slots=True)
class ObjectEvent(NotificationEvent):
    """A Kubernetes object of a watched kind was added, changed or deleted.

    `object` is the object as the API server returns it (a JSON mapping: metadata, spec,
    status). For a delete it holds only `metadata.name` and `metadata.namespace`, as
    upstream's delete events do: an extractor must not depend on a deleted object's state.
    """

    type: EventType
    gvk: GroupVersionKind
    object: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.object.get("metadata", {}).get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.object.get("metadata", {}).get("namespace", ""))


class EndpointEventExtractor(Extractor):
    """Reacts to endpoint lifecycle events from an `endpoint-notification-source`.

    `extract(event, endpoint, out)` is called for every event, in order. For `add-or-update`
    what it records in `out` lands on the endpoint; for `delete` the endpoint is gone and
    `out` is discarded (drop per-endpoint state there).
    """

    input_type: ClassVar[type] = EndpointEvent


class ObjectEventExtractor(Extractor):
    """Reacts to Kubernetes object events from a `k8s-notification-source`.

    `on_object(event)` is called once per event, in order, whatever the object is.
    `extract(event, endpoint, out)` is then called for each endpoint the object is (a Pod
    event, for each endpoint of that pod), so an extractor can stamp attributes on it.
    """

    input_type: ClassVar[type] = ObjectEvent

    def on_object(self, event: ObjectEvent) -> None:
        """Keep state from one event (default: nothing)."""


class NotificationSource(PushDataSource):
    """Base of event sources: their lanes never turn an endpoint stale (see module doc)."""

    #: Read by the collector: False = this source's silence says nothing about freshness.
    affects_staleness: ClassVar[bool] = False


def affects_staleness(source: object) -> bool:
    """Whether a source's lanes count towards an endpoint's `stale` flag."""
    return bool(getattr(source, "affects_staleness", True))
