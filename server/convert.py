"""Store records and hub batches → protobuf messages (the only place that knows both)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from datalayer.hub import Batch, EventKind
from datalayer.model import METRICS_PART, SCALAR_METRIC_FIELDS, AttributeData, Metrics
from datalayer.store import EndpointRecord
from datalayer.v1 import datalayer_pb2 as pb

_EVENT_TYPES = {
    EventKind.ADDED: pb.WatchEvent.ADDED,
    EventKind.UPDATED: pb.WatchEvent.UPDATED,
    EventKind.REMOVED: pb.WatchEvent.REMOVED,
}


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if seconds:
        ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def metrics_to_proto(metrics: Metrics) -> pb.Metrics:
    """The wire form of `metrics`: a field the store does not know (None) is left absent.

    The proto's scalars are `optional`, so a value read as 0 is sent as a present 0 and an
    unknown one is not sent at all: a client can tell "queue 0" from "queue not read",
    which it cannot when both are proto3's default.
    """
    out = pb.Metrics(
        active_models=metrics.active_models,
        waiting_models=metrics.waiting_models,
        custom=metrics.custom,
        update_time=timestamp(metrics.update_time),
        custom_update_time={k: timestamp(v) for k, v in metrics.custom_update_time.items()},
    )
    for name in SCALAR_METRIC_FIELDS:
        value = getattr(metrics, name)
        if value is not None:
            setattr(out, name, value)
    return out


def attribute_to_proto(value: AttributeData, update_time: float) -> pb.AttributeValue:
    out = pb.AttributeValue(update_time=timestamp(update_time))
    if isinstance(value, bool):
        out.object.bool_value = value
    elif isinstance(value, int | float):
        out.number = float(value)
    elif isinstance(value, str):
        out.text = value
    elif isinstance(value, tuple):
        out.strings.values.extend(value)
    else:
        out.object.CopyFrom(json_value(value))
    return out


def json_value(value: Any) -> struct_pb2.Value:
    """A JSON-like Python value as a `google.protobuf.Value`."""
    out = struct_pb2.Value()
    if isinstance(value, Mapping):
        out.struct_value.update(value)
    elif isinstance(value, list | tuple):
        out.list_value.extend(value)
    elif value is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int | float):
        out.number_value = value
    else:
        out.string_value = str(value)
    return out


def endpoint_to_proto(record: EndpointRecord, parts: frozenset[str] = frozenset()) -> pb.Endpoint:
    """The full endpoint, or only the `parts` a subscription asked for (empty = all)."""
    spec = record.spec
    out = pb.Endpoint(
        name=spec.name,
        namespace=spec.namespace,
        address=spec.address,
        port=spec.port,
        labels=spec.labels,
        stale=record.stale,
        last_error=record.last_error,
        revision=record.revision,
        owner=record.owner,
    )
    if not parts or METRICS_PART in parts:
        out.metrics.CopyFrom(metrics_to_proto(record.metrics))
    for key, attribute in record.attributes.items():
        if not parts or key in parts:
            out.attributes[key].CopyFrom(attribute_to_proto(attribute.value, attribute.update_time))
    return out


def batch_to_proto(
    batch: Batch, instance_id: str, parts: frozenset[str] = frozenset()
) -> pb.WatchResponse:
    response = pb.WatchResponse(
        revision=batch.revision,
        instance_id=instance_id,
        synced=batch.synced,
        full_snapshot=batch.full_snapshot,
    )
    for event in batch.events:
        if event.record is None:
            endpoint = pb.Endpoint(name=event.name)
        else:
            endpoint = endpoint_to_proto(event.record, parts)
        response.events.add(type=_EVENT_TYPES[event.kind], endpoint=endpoint)
    return response


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field: its tag byte, the length, the bytes."""
    return tag + _varint(len(body)) + body


# Tag bytes of the length-delimited fields built here (field number << 3 | 2).
_RESPONSE_EVENTS = b"\x0a"  # WatchResponse.events = 1
_LIST_ENDPOINTS = b"\x0a"  # ListEndpointsResponse.endpoints = 1
_EVENT_ENDPOINT = b"\x12"  # WatchEvent.endpoint = 2
#: WatchEvent.type = 1 (varint), per kind.
_EVENT_TYPE = {kind: b"\x08" + _varint(int(value)) for kind, value in _EVENT_TYPES.items()}

#: What decides an endpoint's bytes: name, revision (every committed change bumps it), and the
#: update times that move without a revision (metrics, each attribute sent).
_EndpointKey = tuple[str, int, float, tuple[float, ...], frozenset[str]]


class EndpointEncoder:
    """Serialized `Endpoint` messages, each distinct one built once and shared.

    Keys are exact (see `_EndpointKey`), so cached bytes are always what would
    be built now: Watch events, GetEndpoint and ListEndpoints all read through
    here, and an endpoint that did not change since it was last sent costs a
    dict lookup. Only the latest bytes of each (endpoint, parts) are kept: an
    older version is never asked for again, so memory follows the fleet's size,
    not the number of changes (a soak showed unbounded keys growing RSS).
    """

    def __init__(self) -> None:
        #: (name, parts) -> (the exact key the bytes were built for, the bytes)
        self._cache: dict[tuple[str, frozenset[str]], tuple[_EndpointKey, bytes]] = {}

    def key(self, record: EndpointRecord, parts: frozenset[str]) -> _EndpointKey:
        attributes = record.attributes
        if not attributes:
            stamps: tuple[float, ...] = ()
        elif parts:
            stamps = tuple(attributes[k].update_time for k in parts if k in attributes)
        else:
            stamps = tuple(a.update_time for a in attributes.values())
        return (record.spec.name, record.revision, record.metrics.update_time, stamps, parts)

    def encode(
        self,
        record: EndpointRecord,
        parts: frozenset[str] = frozenset(),
        key: _EndpointKey | None = None,
    ) -> bytes:
        """`endpoint_to_proto(record, parts)`, serialized (`key`: `self.key(record, parts)`)."""
        cache_key = self.key(record, parts) if key is None else key
        slot = (cache_key[0], parts)
        hit = self._cache.get(slot)
        if hit is not None and hit[0] == cache_key:
            return hit[1]
        data = endpoint_to_proto(record, parts).SerializeToString()
        self._cache[slot] = (cache_key, data)
        return data

    def forget(self, name: str) -> None:
        """Drop a removed endpoint's bytes."""
        for slot in [s for s in self._cache if s[0] == name]:
            del self._cache[slot]

    def list_page(
        self,
        endpoints: Sequence[bytes],
        revision: int,
        instance_id: str,
        next_page_token: str = "",
    ) -> bytes:
        """A serialized `ListEndpointsResponse` of already serialized `Endpoint`s."""
        header = pb.ListEndpointsResponse(
            revision=revision, instance_id=instance_id, next_page_token=next_page_token
        ).SerializeToString()
        return b"".join([header, *(_field(_LIST_ENDPOINTS, data) for data in endpoints)])


def field_size(body: bytes) -> int:
    """Bytes `body` takes as a length-delimited field with a one-byte tag (a list entry or an
    event): what a response grows by when it is added."""
    return 1 + len(_varint(len(body))) + len(body)


#: Responses are cut below the default 4 MiB receive limit of every gRPC client (grpc-go,
#: grpc-java, grpcio, grpcurl), with room for the header fields and the HTTP/2 framing.
MAX_RESPONSE_BYTES = 3_670_016  # 3.5 MiB
#: And to a bounded number of events, so no message grows with the fleet either.
MAX_RESPONSE_EVENTS = 500


class WatchEncoder:
    """Serialized `WatchResponse`s for hub batches: each distinct one is built once.

    Subscribers with equal filters that keep up drain identical batches right
    after each hub flush; the first one's responses are serialized and the same
    bytes objects are handed to every other stream (gRPC sends them as is: the
    Watch method is registered without a response serializer). Endpoints come
    from the shared `EndpointEncoder`, so subscribers that differ in selector, or
    drain at other times, still share each endpoint's bytes. A response is the
    concatenation of its header fields and its events, which protobuf parses as
    one message. Keys are exact; only the most recent `max_entries` are kept.

    A batch larger than `max_bytes` (or `max_events`) is split over several
    responses, so no client hits its 4 MiB receive limit: only the last carries
    `synced` and the batch's revision; the others carry `batch.base_revision`, a
    revision a client that got only those can resume from without losing the rest
    (0 within a full snapshot: resuming from 0 gets a new snapshot).
    """

    def __init__(
        self,
        instance_id: str,
        endpoints: EndpointEncoder | None = None,
        max_entries: int = 256,
        max_bytes: int = MAX_RESPONSE_BYTES,
        max_events: int = MAX_RESPONSE_EVENTS,
    ) -> None:
        self.instance_id = instance_id
        self.endpoints = endpoints or EndpointEncoder()
        #: Sharing happens between streams draining the same flush, so only the most recent
        #: responses are worth keeping; the oldest go first.
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_events = max_events
        #: Responses built vs. handed out again from the cache (for tests and benchmarks).
        self.built = 0
        self.reused = 0
        self._responses: dict[tuple[object, ...], list[bytes]] = {}

    def encode(self, batch: Batch, parts: frozenset[str] = frozenset()) -> list[bytes]:
        """The serialized `WatchResponse`s for `batch` (one unless it is too large), its
        endpoints filtered to `parts`."""
        endpoint_key = self.endpoints.key
        keys = [
            None if event.record is None else endpoint_key(event.record, parts)
            for event in batch.events
        ]
        key = (
            parts,
            batch.revision,
            batch.base_revision,
            batch.synced,
            batch.full_snapshot,
            *((event.kind, event.name) for event in batch.events),
            *keys,
        )
        data = self._responses.get(key)
        if data is not None:
            self.reused += 1
            return data
        if len(self._responses) >= self.max_entries:
            del self._responses[next(iter(self._responses))]
        encode = self.endpoints.encode
        chunks: list[list[bytes]] = [[]]
        size = 0
        for event, event_key in zip(batch.events, keys, strict=True):
            if event.record is None:
                endpoint = pb.Endpoint(name=event.name).SerializeToString()
            else:
                endpoint = encode(event.record, parts, event_key)
            body = _EVENT_TYPE[event.kind] + _field(_EVENT_ENDPOINT, endpoint)
            piece = _field(_RESPONSE_EVENTS, body)
            current = chunks[-1]
            if current and (size + len(piece) > self.max_bytes or len(current) >= self.max_events):
                chunks.append([])
                current, size = chunks[-1], 0
            current.append(piece)
            size += len(piece)
        last = len(chunks) - 1
        data = [
            b"".join(
                [
                    pb.WatchResponse(
                        revision=batch.revision if i == last else batch.base_revision,
                        instance_id=self.instance_id,
                        synced=batch.synced and i == last,
                        full_snapshot=batch.full_snapshot,
                    ).SerializeToString(),
                    *chunk,
                ]
            )
            for i, chunk in enumerate(chunks)
        ]
        self._responses[key] = data
        self.built += 1
        return data
