"""The async Python client, and the mirror a scheduler keeps from `Watch`.

    async with DataLayerClient("localhost:9002") as client:
        endpoint = await client.get_endpoint("vllm-0")
        mirror = client.mirror(selector="app=vllm")
        async with mirror:                  # runs the stream in the background
            await mirror.synced.wait()
            print(mirror.endpoints)         # name -> datalayer.v1.Endpoint, kept current

The mirror reconnects with jittered exponential backoff and resumes from the
last revision it saw; the server replays the gap or sends a full snapshot,
and the mirror applies either, so removals during a disconnect are not lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

import grpc
from google.protobuf import duration_pb2

from datalayer.v1 import datalayer_pb2 as pb
from datalayer.v1 import datalayer_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

WatchCallback = Callable[[pb.WatchResponse], None]


def _duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


@dataclass(frozen=True)
class ClientTls:
    """PEM bytes: the CA that signed the server, and a client cert/key for mTLS."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None


class DataLayerClient:
    """A thin typed wrapper over the generated stub, owning its channel."""

    def __init__(
        self,
        target: str,
        channel: grpc.aio.Channel | None = None,
        *,
        tls: ClientTls | None = None,
        token: str | None = None,
    ) -> None:
        self.target = target
        if channel is None and tls is not None:
            credentials = grpc.ssl_channel_credentials(tls.ca, tls.key, tls.cert)
            channel = grpc.aio.secure_channel(target, credentials)
        self._channel = channel or grpc.aio.insecure_channel(target)
        self._stub = pb_grpc.DataLayerStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    async def __aenter__(self) -> DataLayerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def get_endpoint(self, name: str, timeout: float = 5.0) -> pb.Endpoint:
        response: pb.Endpoint = await self._stub.GetEndpoint(
            pb.GetEndpointRequest(name=name), timeout=timeout, metadata=self._metadata
        )
        return response

    async def list_endpoints(
        self, selector: str = "", timeout: float = 5.0
    ) -> pb.ListEndpointsResponse:
        response: pb.ListEndpointsResponse = await self._stub.ListEndpoints(
            pb.ListEndpointsRequest(selector=selector), timeout=timeout, metadata=self._metadata
        )
        return response

    async def watch(
        self,
        selector: str = "",
        names: Iterable[str] = (),
        attributes: Iterable[str] = (),
        min_interval: float = 0.0,
        heartbeat_interval: float = 0.0,
        resume_revision: int = 0,
        resume_instance_id: str = "",
    ) -> AsyncIterator[pb.WatchResponse]:
        """The raw stream of WatchResponses; ends when the server closes it."""
        request = pb.Subscription(
            selector=selector,
            names=list(names),
            attributes=list(attributes),
            min_interval=_duration(min_interval),
            heartbeat_interval=_duration(heartbeat_interval),
            resume_revision=resume_revision,
            resume_instance_id=resume_instance_id,
        )
        call = self._stub.Watch(request, metadata=self._metadata)
        try:
            async for response in call:
                yield response
        finally:
            call.cancel()

    def mirror(
        self,
        selector: str = "",
        names: Iterable[str] = (),
        attributes: Iterable[str] = (),
        on_response: WatchCallback | None = None,
        min_interval: float = 0.0,
    ) -> EndpointMirror:
        return EndpointMirror(
            self, selector, tuple(names), tuple(attributes), on_response, min_interval
        )


class EndpointMirror:
    """A local dict of endpoints kept current from a Watch stream, across reconnects."""

    def __init__(
        self,
        client: DataLayerClient,
        selector: str = "",
        names: tuple[str, ...] = (),
        attributes: tuple[str, ...] = (),
        on_response: WatchCallback | None = None,
        min_interval: float = 0.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        self.client = client
        self.selector = selector
        self.names = names
        self.attributes = attributes
        self.on_response = on_response
        self.min_interval = min_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.endpoints: dict[str, pb.Endpoint] = {}
        self.revision = 0
        self.instance_id = ""
        #: Set once the current stream has delivered the initial state.
        self.synced = asyncio.Event()
        self.reconnects = 0
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> EndpointMirror:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="endpoint-mirror")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def wait_for(self, predicate: Callable[[EndpointMirror], bool]) -> None:
        """Wait until `predicate(mirror)` holds after some response was applied."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def run(self) -> None:
        """Stream forever: reconnect with jittered backoff, resuming from the last revision."""
        delay = self.backoff_initial
        while True:
            try:
                first = True
                async for response in self.client.watch(
                    self.selector,
                    self.names,
                    self.attributes,
                    min_interval=self.min_interval,
                    resume_revision=self.revision,
                    resume_instance_id=self.instance_id,
                ):
                    await self._apply(response, first)
                    first = False
                    delay = self.backoff_initial
                log.info("watch stream ended by the server; reconnecting")
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                log.info("watch stream failed (%s); reconnecting", exc.code().name)
            self.synced.clear()
            self.reconnects += 1
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self.backoff_max)

    async def _apply(self, response: pb.WatchResponse, first_of_stream: bool) -> None:
        if first_of_stream and response.full_snapshot:
            self.endpoints.clear()
        for event in response.events:
            if event.type == pb.WatchEvent.REMOVED:
                self.endpoints.pop(event.endpoint.name, None)
            else:
                self.endpoints[event.endpoint.name] = event.endpoint
        self.revision = response.revision
        self.instance_id = response.instance_id
        if response.synced:
            self.synced.set()
        if self.on_response is not None:
            self.on_response(response)
        async with self._changed:
            self._changed.notify_all()
