"""The `datalayer.v1.DataLayer` gRPC service on top of the store and the hub.

Every malformed field is INVALID_ARGUMENT with a message naming the field;
only the hub decides what a Watch stream sends.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import NoReturn

import grpc

from datalayer.hub import Hub, WatchFilter
from datalayer.selector import Selector, SelectorError, parse_selector
from datalayer.store import REMOVED_PART, EndpointStore
from datalayer.v1 import datalayer_pb2 as pb
from datalayer.v1 import datalayer_pb2_grpc as pb_grpc
from server.convert import EndpointEncoder, WatchEncoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceLimits:
    max_names: int = 10_000
    max_attributes: int = 256
    #: Heartbeats faster than this would only load the server.
    min_heartbeat_seconds: float = 0.1
    max_interval_seconds: float = 3600.0


class InvalidRequest(ValueError):
    """A request field is malformed; the message starts with the field's name."""


def _parse_selector(text: str) -> Selector:
    try:
        return parse_selector(text)
    except SelectorError as exc:
        raise InvalidRequest(f"selector: {exc}") from None


def _seconds(duration: object, field: str, limits: ServiceLimits) -> float:
    seconds = duration.seconds + duration.nanos / 1e9  # type: ignore[attr-defined]
    if seconds < 0:
        raise InvalidRequest(f"{field}: must not be negative")
    if seconds > limits.max_interval_seconds:
        raise InvalidRequest(f"{field}: must be at most {limits.max_interval_seconds:g}s")
    return float(seconds)


def subscription_filter(request: pb.Subscription, limits: ServiceLimits) -> WatchFilter:
    """Validate a Subscription's filter fields."""
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
    return WatchFilter(selector, frozenset(request.names), frozenset(request.attributes))


async def _abort(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str
) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("context.abort always raises")


class DataLayerService(pb_grpc.DataLayerServicer):  # type: ignore[misc]
    def __init__(self, store: EndpointStore, hub: Hub, limits: ServiceLimits | None = None):
        self.store = store
        self.hub = hub
        self.limits = limits or ServiceLimits()
        #: Every reply is built from here: each endpoint state is serialized once, and equal
        #: Watch batches once (see `add_to_server`: the methods return bytes).
        self.endpoints = EndpointEncoder()
        self.encoder = WatchEncoder(store.instance_id, self.endpoints)
        store.add_listener(self._forget_removed)

    def _forget_removed(self, name: str, parts: frozenset[str], revision: int) -> None:
        if REMOVED_PART in parts:
            self.endpoints.forget(name)

    async def GetEndpoint(
        self, request: pb.GetEndpointRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """A serialized `Endpoint`."""
        if not request.name:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "name: must not be empty")
        record = self.store.get(request.name)
        if record is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"endpoint {request.name!r} not found")
        return self.endpoints.encode(record)

    async def ListEndpoints(
        self, request: pb.ListEndpointsRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """A serialized `ListEndpointsResponse`."""
        try:
            selector = _parse_selector(request.selector)
        except InvalidRequest as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        # No await between reading the records and the revision: a consistent snapshot.
        records = [r for r in self.store if selector.matches(r.spec.labels)]
        return self.endpoints.list_response(records, self.store.revision, self.store.instance_id)

    async def Watch(
        self, request: pb.Subscription, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """Serialized `WatchResponse`s (see `add_to_server`: no response serializer)."""
        try:
            watch_filter = subscription_filter(request, self.limits)
            min_interval = _seconds(request.min_interval, "min_interval", self.limits)
            heartbeat = _seconds(request.heartbeat_interval, "heartbeat_interval", self.limits)
            if 0 < heartbeat < self.limits.min_heartbeat_seconds:
                raise InvalidRequest(
                    f"heartbeat_interval: must be 0 or at least "
                    f"{self.limits.min_heartbeat_seconds:g}s"
                )
        except InvalidRequest as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
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
                yield encode(batch, parts)
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
            request_deserializer=pb.GetEndpointRequest.FromString,
            response_serializer=None,  # already bytes
        ),
        "ListEndpoints": grpc.unary_unary_rpc_method_handler(
            service.ListEndpoints,
            request_deserializer=pb.ListEndpointsRequest.FromString,
            response_serializer=None,  # already bytes
        ),
        "Watch": grpc.unary_stream_rpc_method_handler(
            service.Watch,
            request_deserializer=pb.Subscription.FromString,
            response_serializer=None,  # already bytes
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
