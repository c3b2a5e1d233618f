"""The `datalayer.v1.DataLayer` gRPC service on top of the store and the hub.

Every malformed field is INVALID_ARGUMENT with a message naming the field
(and so are request bytes that are not a valid message: one log line, no
traceback). Error texts echo at most a short prefix of the input, so a huge
name still gets its NOT_FOUND rather than a status too large for the client's
metadata limit. Only the hub decides what a Watch stream sends.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from google.protobuf import message as protobuf_message

from datalayer.hub import Hub, WatchFilter
from datalayer.model import METRICS_PART
from datalayer.plugin import Extractor
from datalayer.selector import Selector, SelectorError, parse_selector
from datalayer.store import REMOVED_PART, EndpointStore
from datalayer.v1 import datalayer_pb2 as pb
from datalayer.v1 import datalayer_pb2_grpc as pb_grpc
from server.convert import MAX_RESPONSE_BYTES, EndpointEncoder, WatchEncoder, field_size
from server.prefix import PrefixMatcher, PrefixRequestError

if TYPE_CHECKING:
    from datalayer.config import DataLayerConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceLimits:
    max_names: int = 10_000
    max_attributes: int = 256
    #: Heartbeats faster than this would only load the server.
    min_heartbeat_seconds: float = 0.1
    max_interval_seconds: float = 3600.0
    #: No response (a ListEndpoints page, a Watch message) grows past this: clients accept
    #: 4 MiB by default.
    max_response_bytes: int = MAX_RESPONSE_BYTES
    #: Snapshots of paged listings kept for their next pages, and for how long after the
    #: last page was served; past either, a page token gets ABORTED (list again).
    max_list_snapshots: int = 16
    list_snapshot_ttl_seconds: float = 60.0
    #: Characters of a client's input an error message repeats.
    max_echo_chars: int = 64
    #: Whole error messages are cut here (gRPC clients refuse trailers over 8 KB).
    max_message_chars: int = 1024


class InvalidRequest(ValueError):
    """A request field is malformed; the message starts with the field's name."""


class _SnapshotGone(LookupError):
    """A page token whose listing snapshot is no longer kept (ABORTED: list again)."""


def _parse_selector(text: str) -> Selector:
    try:
        return parse_selector(text)
    except SelectorError as exc:
        raise InvalidRequest(f"selector: {exc}") from None


def echo(text: str, limit: int = ServiceLimits.max_echo_chars) -> str:
    """`text` quoted for an error message, cut to `limit` characters (saying how long it was):
    a message that repeats a 20 KB input would exceed the client's metadata limit and turn
    the real status into RESOURCE_EXHAUSTED."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def _seconds(duration: Any, field: str, limits: ServiceLimits) -> float:
    """A `google.protobuf.Duration` as seconds, refusing what the type does not allow (nanos
    outside ±999,999,999, or seconds and nanos of opposite signs) rather than guessing."""
    secs, nanos = int(duration.seconds), int(duration.nanos)
    if not -999_999_999 <= nanos <= 999_999_999:
        raise InvalidRequest(f"{field}: nanos must be within -999999999..999999999, got {nanos}")
    if (secs < 0 < nanos) or (nanos < 0 < secs):
        raise InvalidRequest(f"{field}: seconds and nanos must have the same sign")
    seconds = secs + nanos / 1e9
    if seconds < 0:
        raise InvalidRequest(f"{field}: must not be negative")
    if seconds > limits.max_interval_seconds:
        raise InvalidRequest(f"{field}: must be at most {limits.max_interval_seconds:g}s")
    return float(seconds)


def declared_attribute_keys(config: DataLayerConfig) -> frozenset[str]:
    """The attribute keys the configuration's extractors say they produce."""
    keys: set[str] = set()
    for plugin in config.plugins.values():
        if isinstance(plugin, Extractor):
            keys |= plugin.produced_attributes()
    return frozenset(keys)


def subscription_filter(
    request: pb.Subscription,
    limits: ServiceLimits,
    known_parts: Callable[[], Iterable[str]] | None = None,
) -> WatchFilter:
    """Validate a Subscription's filter fields. With `known_parts`, an attribute that is not
    one of them is refused: a typo (`metricz`) would otherwise be a stream that silently
    never sends the data asked for."""
    selector = _parse_selector(request.selector)
    if len(request.names) > limits.max_names:
        raise InvalidRequest(f"names: at most {limits.max_names} names")
    for i, name in enumerate(request.names):
        if not name:
            raise InvalidRequest(f"names[{i}]: must not be empty")
    if len(request.attributes) > limits.max_attributes:
        raise InvalidRequest(f"attributes: at most {limits.max_attributes} keys")
    for i, key in enumerate(request.attributes):
        if not key:
            raise InvalidRequest(f"attributes[{i}]: must not be empty")
    if request.attributes and known_parts is not None:
        known = frozenset(known_parts())
        for i, key in enumerate(request.attributes):
            if key not in known:
                names = sorted(known)
                shown = ", ".join(map(repr, names[:20])) + (", ..." if len(names) > 20 else "")
                raise InvalidRequest(f"attributes[{i}]: unknown part {echo(key)}; known: {shown}")
    return WatchFilter(selector, frozenset(request.names), frozenset(request.attributes))


async def _abort(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str
) -> NoReturn:
    limit = ServiceLimits.max_message_chars
    if len(message) > limit:
        message = message[: limit - 3] + "..."
    await context.abort(code, message)
    raise AssertionError("context.abort always raises")


@dataclass
class _ListSnapshot:
    """A paged listing's endpoints, serialized when the first page was asked for (the bytes
    objects are the shared encoder's, so keeping them costs little until endpoints change)."""

    selector: str
    revision: int
    endpoints: list[bytes]
    expires: float


class _ListSnapshots:
    """The snapshots of listings still being paged through, by opaque id; bounded in number
    and age, so a client that never asks for the next page costs nothing for long."""

    def __init__(self, limits: ServiceLimits) -> None:
        self.limits = limits
        self._snapshots: OrderedDict[str, _ListSnapshot] = OrderedDict()

    def put(self, snapshot: _ListSnapshot) -> str:
        self._expire()
        while len(self._snapshots) >= self.limits.max_list_snapshots:
            self._snapshots.popitem(last=False)
        snapshot_id = secrets.token_hex(8)
        self._snapshots[snapshot_id] = snapshot
        return snapshot_id

    def get(self, snapshot_id: str) -> _ListSnapshot | None:
        self._expire()
        snapshot = self._snapshots.get(snapshot_id)
        if snapshot is not None:
            snapshot.expires = time.monotonic() + self.limits.list_snapshot_ttl_seconds
            self._snapshots.move_to_end(snapshot_id)
        return snapshot

    def drop(self, snapshot_id: str) -> None:
        self._snapshots.pop(snapshot_id, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for snapshot_id in [k for k, v in self._snapshots.items() if v.expires < now]:
            del self._snapshots[snapshot_id]


def _page_token(instance_id: str, snapshot_id: str, offset: int) -> str:
    raw = f"{instance_id}/{snapshot_id}/{offset}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_page_token(token: str) -> tuple[str, str, int]:
    """(instance id, snapshot id, offset); InvalidRequest when it is not one of our tokens."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        instance_id, snapshot_id, offset = raw.split("/")
        position = int(offset)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequest(f"page_token: not a token this server issued: {echo(token)}") from None
    if position <= 0:
        raise InvalidRequest(f"page_token: not a token this server issued: {echo(token)}")
    return instance_id, snapshot_id, position


class _Malformed:
    """What the request deserializer returns for bytes that are not a valid message: the
    method then answers INVALID_ARGUMENT itself (a raising deserializer makes grpcio log a
    traceback and answer UNKNOWN, for every such request)."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _lenient(message_type: Any) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except protobuf_message.DecodeError as exc:
            return _Malformed(str(exc)[:200])

    return deserialize


_malformed_logged = 0.0


async def _refuse_malformed(request: object, context: grpc.aio.ServicerContext) -> None:
    """Abort with INVALID_ARGUMENT if `request` could not be parsed; logged at most once a
    minute (at WARNING, one line), so a broken or hostile client cannot flood the log."""
    if not isinstance(request, _Malformed):
        return
    global _malformed_logged
    now = time.monotonic()
    if now - _malformed_logged > 60.0:
        _malformed_logged = now
        log.warning("refused a request that is not a valid protobuf message: %s", request.error)
    await _abort(
        context,
        grpc.StatusCode.INVALID_ARGUMENT,
        f"request: not a valid protobuf message ({request.error})",
    )


class DataLayerService(pb_grpc.DataLayerServicer):  # type: ignore[misc]
    def __init__(
        self,
        store: EndpointStore,
        hub: Hub,
        limits: ServiceLimits | None = None,
        attribute_keys: Callable[[], Iterable[str]] | None = None,
        owner: str = "",
        prefix: PrefixMatcher | None = None,
    ):
        """`attribute_keys`: what the current configuration's extractors declare they
        produce (see `declared_attribute_keys`); a Watch may ask for those, `metrics`, and
        any key an endpoint holds now."""
        self.store = store
        self.hub = hub
        self.limits = limits or ServiceLimits()
        self.attribute_keys = attribute_keys
        #: This replica's name in its group (`owned_only` streams send what it owns).
        self.owner = owner
        #: Answers MatchPrefix from the configured prefix-cache index (server/prefix.py).
        self.prefix = prefix
        #: Every reply is built from here: each endpoint state is serialized once, and equal
        #: Watch batches once (see `add_to_server`: the methods return bytes).
        self.endpoints = EndpointEncoder()
        self.encoder = WatchEncoder(
            store.instance_id, self.endpoints, max_bytes=self.limits.max_response_bytes
        )
        self.list_snapshots = _ListSnapshots(self.limits)
        store.add_listener(self._forget_removed)

    def known_parts(self) -> set[str]:
        """The parts a subscription may name: `metrics`, declared keys, keys held now."""
        known = {METRICS_PART}
        if self.attribute_keys is not None:
            known.update(self.attribute_keys())
        for record in self.store:
            known.update(record.attributes)
        return known

    def _forget_removed(self, name: str, parts: frozenset[str], revision: int) -> None:
        if REMOVED_PART in parts:
            self.endpoints.forget(name)

    async def GetEndpoint(
        self, request: pb.GetEndpointRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """A serialized `Endpoint`."""
        await _refuse_malformed(request, context)
        if not request.name:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "name: must not be empty")
        record = self.store.get(request.name)
        if record is None:
            await _abort(
                context, grpc.StatusCode.NOT_FOUND, f"endpoint {echo(request.name)} not found"
            )
        return self.endpoints.encode(record)

    async def MatchPrefix(
        self, request: pb.MatchPrefixRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """A serialized `MatchPrefixResponse` (see server/prefix.py)."""
        await _refuse_malformed(request, context)
        if self.prefix is None:
            await _abort(context, grpc.StatusCode.UNIMPLEMENTED, "MatchPrefix is not served here")
        try:
            return self.prefix.answer(request)
        except PrefixRequestError as exc:
            await _abort(context, exc.code, exc.message)

    async def ListEndpoints(
        self, request: pb.ListEndpointsRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """A serialized `ListEndpointsResponse`: one page (see the proto for paging)."""
        await _refuse_malformed(request, context)
        try:
            page = self._list_page(request)
        except InvalidRequest as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except _SnapshotGone as exc:
            await _abort(context, grpc.StatusCode.ABORTED, str(exc))
        return page

    def _list_page(self, request: pb.ListEndpointsRequest) -> bytes:
        if request.page_size < 0:
            raise InvalidRequest("page_size: must not be negative")
        instance_id = self.store.instance_id
        snapshot_id = ""
        offset = 0
        if request.page_token:
            token_instance, snapshot_id, offset = _parse_page_token(request.page_token)
            snapshot = (
                self.list_snapshots.get(snapshot_id) if token_instance == instance_id else None
            )
            if snapshot is None:
                raise _SnapshotGone(
                    "page_token: the listing it continues has expired or is from another "
                    "server instance; list again from the first page"
                )
            if snapshot.selector != request.selector:
                raise InvalidRequest("selector: must be the same as for the first page")
        else:
            selector = _parse_selector(request.selector)
            encode = self.endpoints.encode
            # No await between reading the records and the revision: a consistent snapshot.
            snapshot = _ListSnapshot(
                request.selector,
                self.store.revision,
                [encode(r) for r in self.store if selector.matches(r.spec.labels)],
                0.0,
            )
        endpoints = snapshot.endpoints
        budget = self.limits.max_response_bytes
        end = offset
        limit = len(endpoints) if request.page_size == 0 else offset + request.page_size
        while end < min(limit, len(endpoints)):
            size = field_size(endpoints[end])
            if end > offset and size > budget:
                break  # the page holds at least one endpoint, however large
            budget -= size
            end += 1
        token = ""
        if end < len(endpoints):
            if not snapshot_id:
                snapshot.expires = time.monotonic() + self.limits.list_snapshot_ttl_seconds
                snapshot_id = self.list_snapshots.put(snapshot)
            token = _page_token(instance_id, snapshot_id, end)
        elif snapshot_id:
            self.list_snapshots.drop(snapshot_id)
        return self.endpoints.list_page(
            endpoints[offset:end], snapshot.revision, instance_id, token
        )

    async def Watch(
        self, request: pb.Subscription, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """Serialized `WatchResponse`s (see `add_to_server`: no response serializer)."""
        await _refuse_malformed(request, context)
        try:
            watch_filter = subscription_filter(request, self.limits, self.known_parts)
            min_interval = _seconds(request.min_interval, "min_interval", self.limits)
            heartbeat = _seconds(request.heartbeat_interval, "heartbeat_interval", self.limits)
            if 0 < heartbeat < self.limits.min_heartbeat_seconds:
                raise InvalidRequest(
                    f"heartbeat_interval: must be 0 or at least "
                    f"{self.limits.min_heartbeat_seconds:g}s"
                )
        except InvalidRequest as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if request.owned_only:
            watch_filter = dataclasses.replace(watch_filter, owned_by=self.owner)
        try:
            subscriber = self.hub.subscribe(
                watch_filter,
                resume_revision=request.resume_revision,
                resume_instance_id=request.resume_instance_id,
                min_interval=min_interval,
                heartbeat_interval=heartbeat,
            )
        except OverflowError as exc:
            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        encode = self.encoder.encode
        parts = watch_filter.parts
        try:
            async for batch in subscriber.batches():
                for data in encode(batch, parts):
                    yield data
        finally:
            self.hub.unsubscribe(subscriber)


SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DataLayer"].full_name


def add_to_server(service: DataLayerService, server: grpc.aio.Server) -> None:
    """Register `service` as the generated `add_DataLayerServicer_to_server` does, except that
    no method has a response serializer: they return bytes built from the service's shared
    encoders (a Watch batch is serialized once for every stream with the same filter). The
    wire format is the same, so clients and server reflection (grpcurl) see no difference."""
    handlers = {
        "GetEndpoint": grpc.unary_unary_rpc_method_handler(
            service.GetEndpoint,
            request_deserializer=_lenient(pb.GetEndpointRequest),
            response_serializer=None,  # already bytes
        ),
        "ListEndpoints": grpc.unary_unary_rpc_method_handler(
            service.ListEndpoints,
            request_deserializer=_lenient(pb.ListEndpointsRequest),
            response_serializer=None,  # already bytes
        ),
        "MatchPrefix": grpc.unary_unary_rpc_method_handler(
            service.MatchPrefix,
            request_deserializer=_lenient(pb.MatchPrefixRequest),
            response_serializer=None,  # already bytes
        ),
        "Watch": grpc.unary_stream_rpc_method_handler(
            service.Watch,
            request_deserializer=_lenient(pb.Subscription),
            response_serializer=None,  # already bytes
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
