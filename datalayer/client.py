"""The async Python client, and the mirror a scheduler keeps from `Watch`.

    async with DataLayerClient("localhost:9002") as client:
        endpoint = await client.get_endpoint("vllm-0")
        mirror = client.mirror(selector="app=vllm")
        async with mirror:                  # runs the stream in the background
            await mirror.synced.wait()
            print(mirror.endpoints)         # name -> datalayer.v1.Endpoint, kept current

The mirror reconnects with jittered exponential backoff (0.1 s doubling to
1 s) and resumes from the last revision it saw; the server replays the gap or
sends a full snapshot, and the mirror applies either, so removals during a
disconnect are not lost. When it has had no connection for `stale_after`
seconds (2 s, the server's default staleness threshold), every endpoint of its
view reads as stale with its typed metrics absent, so a scheduler never keeps
routing on a frozen copy; `connected` and `disconnected_since` say why.

Unknown is never zero: the typed scalars of `Metrics` have presence, and an
absent one means "not read within the staleness threshold". Read them with
`metric()` (None when absent) or `metric_or_worst()` (the worst case when
absent), never with the bare attribute, which reads an absent field as 0:

    best = min(mirror.endpoints.values(),
               key=lambda e: metric_or_worst(e, "waiting_queue_size"))
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import grpc
from google.protobuf import duration_pb2

from datalayer.model import SCALAR_METRIC_FIELDS
from datalayer.v1 import datalayer_pb2 as pb
from datalayer.v1 import datalayer_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

WatchCallback = Callable[[pb.WatchResponse], None]

#: The typed `Metrics` scalars that carry presence (absent = not known).
OPTIONAL_METRICS: Final = SCALAR_METRIC_FIELDS

#: What a scheduler should assume for an absent load signal: the least attractive value, so
#: a pod that was not read never wins over one that was (an unbounded queue, a full cache).
WORST_CASE: Final[dict[str, float]] = {
    "waiting_queue_size": math.inf,
    "running_requests_size": math.inf,
    "kv_cache_usage_percent": 1.0,
}

#: Channel options of the client's own channels: gRPC's default reconnect backoff (1 s growing
#: by 1.6x to 120 s) kept a mirror away for 3-11 s after a 20 s outage; a mirror is one
#: long-lived stream per process, so retrying fast costs nothing and resyncs in well under 1 s.
CHANNEL_OPTIONS: Final = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


def _metrics_of(source: pb.Endpoint | pb.Metrics) -> pb.Metrics:
    return source.metrics if isinstance(source, pb.Endpoint) else source


def metric(source: pb.Endpoint | pb.Metrics, name: str) -> int | float | None:
    """The typed scalar `name` of an endpoint (or its metrics), or None when it is absent.

    The generated attribute reads an absent field as 0, the most attractive value there is;
    this is the presence-aware read (`HasField`) under a name a scheduler can call in a key.
    """
    if name not in OPTIONAL_METRICS:
        raise KeyError(f"{name!r} is not one of the optional Metrics fields {OPTIONAL_METRICS}")
    metrics = _metrics_of(source)
    if not metrics.HasField(name):
        return None
    value: int | float = getattr(metrics, name)
    return value


def metric_or_worst(source: pb.Endpoint | pb.Metrics, name: str) -> float:
    """`metric(source, name)`, or `WORST_CASE[name]` when absent (for sort keys and scorers)."""
    if name not in WORST_CASE:
        raise KeyError(f"no worst case for {name!r}; known: {sorted(WORST_CASE)}")
    value = metric(source, name)
    return WORST_CASE[name] if value is None else float(value)


def lora_models(source: pb.Endpoint | pb.Metrics) -> tuple[list[str], list[str]] | None:
    """(active, waiting) LoRA adapters, or None when not known (`max_active_models` absent).

    Repeated fields have no presence, so an empty list alone cannot tell "no adapters" from
    "not read"; the lists are meaningful exactly when `max_active_models` is present.
    """
    metrics = _metrics_of(source)
    if not metrics.HasField("max_active_models"):
        return None
    return list(metrics.active_models), list(metrics.waiting_models)


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


def split_targets(target: str | Sequence[str]) -> list[str]:
    """`a:1,b:2` or a list: the replicas of one group, in the order to try them."""
    parts = target.split(",") if isinstance(target, str) else list(target)
    targets = [t.strip() for t in parts if t.strip()]
    if not targets:
        raise ValueError("no target given")
    return targets


class DataLayerClient:
    """A thin typed wrapper over the generated stub, owning its channel.

    `target` may name several replicas of one group (`a:9002,b:9002`, or a list): every
    replica serves every endpoint, so the client talks to one and moves to the next when
    it is unavailable (`failover`); unary calls retry there by themselves. A DNS name that
    resolves to several addresses is one target: gRPC's resolver moves between those.
    """

    def __init__(
        self,
        target: str | Sequence[str],
        channel: grpc.aio.Channel | None = None,
        *,
        tls: ClientTls | None = None,
        token: str | None = None,
    ) -> None:
        self.targets = split_targets(target)
        self.target = self.targets[0]
        self._tls = tls
        self._fixed_channel = channel is not None
        self._channel = channel or self._connect(self.target)
        self._stub = pb_grpc.DataLayerStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._retired: list[grpc.aio.Channel] = []

    def _connect(self, target: str) -> grpc.aio.Channel:
        if self._tls is not None:
            tls = self._tls
            credentials = grpc.ssl_channel_credentials(tls.ca, tls.key, tls.cert)
            return grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)

    @property
    def replicated(self) -> bool:
        """True when there is another target to fail over to."""
        return len(self.targets) > 1 and not self._fixed_channel

    def failover(self) -> str:
        """Talk to the next target from now on (the current one failed); returns it. The
        old channel is closed with the client, so calls still running on it end normally."""
        if not self.replicated:
            return self.target
        index = (self.targets.index(self.target) + 1) % len(self.targets)
        self._retired.append(self._channel)
        self.target = self.targets[index]
        self._channel = self._connect(self.target)
        self._stub = pb_grpc.DataLayerStub(self._channel)
        log.info("data layer client: failing over to %s", self.target)
        return self.target

    async def _unary(self, method: str, request: object, timeout: float) -> Any:
        """One unary call, moved to the next replica while the current one is unavailable."""
        attempts = len(self.targets) if self.replicated else 1
        for attempt in range(attempts):
            try:
                return await getattr(self._stub, method)(
                    request, timeout=timeout, metadata=self._metadata
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == attempts - 1:
                    raise
                self.failover()
        raise AssertionError("unreachable")

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
        for channel in [*self._retired, self._channel]:
            await channel.close()
        self._retired = []

    async def get_endpoint(self, name: str, timeout: float = 5.0) -> pb.Endpoint:
        response: pb.Endpoint = await self._unary(
            "GetEndpoint", pb.GetEndpointRequest(name=name), timeout
        )
        return response

    async def match_prefix(
        self, model: str, token_ids: Sequence[int], selector: str = "", timeout: float = 5.0
    ) -> pb.MatchPrefixResponse:
        """Per endpoint, the prompt's leading KV blocks it holds (precise prefix-cache
        affinity); FAILED_PRECONDITION when the data layer has no kv-block-index."""
        request = pb.MatchPrefixRequest(model=model, token_ids=token_ids, selector=selector)
        response: pb.MatchPrefixResponse = await self._unary("MatchPrefix", request, timeout)
        return response

    async def list_endpoints(
        self, selector: str = "", timeout: float = 5.0, page_size: int = 0
    ) -> pb.ListEndpointsResponse:
        """Every matching endpoint, in one response merged from all pages (the server cuts
        pages below the 4 MiB a client accepts; they all come from one snapshot, at one
        revision). `timeout` is per page. A listing whose snapshot expired before its last
        page (ABORTED) is started again, a few times at most."""
        for attempt in range(3):
            try:
                return await self._list_all_pages(selector, timeout, page_size)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.ABORTED or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _list_all_pages(
        self, selector: str, timeout: float, page_size: int
    ) -> pb.ListEndpointsResponse:
        merged: pb.ListEndpointsResponse | None = None
        token = ""
        while True:
            page: pb.ListEndpointsResponse = await self._unary(
                "ListEndpoints",
                pb.ListEndpointsRequest(selector=selector, page_size=page_size, page_token=token),
                timeout,
            )
            if merged is None:
                merged = page
            else:
                merged.endpoints.extend(page.endpoints)
            token = page.next_page_token
            if not token:
                merged.next_page_token = ""
                return merged

    async def watch(
        self,
        selector: str = "",
        names: Iterable[str] = (),
        attributes: Iterable[str] = (),
        min_interval: float = 0.0,
        heartbeat_interval: float = 0.0,
        resume_revision: int = 0,
        resume_instance_id: str = "",
        wait_for_ready: bool = False,
    ) -> AsyncGenerator[pb.WatchResponse, None]:
        """The raw stream of WatchResponses; ends when the server closes it.

        `wait_for_ready`: while the server is unreachable, wait for the channel to connect
        instead of failing at once (the mirror's choice: it then resyncs as soon as gRPC's
        reconnect succeeds, not at its own next retry).
        """
        request = pb.Subscription(
            selector=selector,
            names=list(names),
            attributes=list(attributes),
            min_interval=_duration(min_interval),
            heartbeat_interval=_duration(heartbeat_interval),
            resume_revision=resume_revision,
            resume_instance_id=resume_instance_id,
        )
        call = self._stub.Watch(request, metadata=self._metadata, wait_for_ready=wait_for_ready)
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
        stale_after: float = 2.0,
    ) -> EndpointMirror:
        return EndpointMirror(
            self,
            selector,
            tuple(names),
            tuple(attributes),
            on_response,
            min_interval,
            stale_after=stale_after,
        )


class EndpointMirror:
    """A local dict of endpoints kept current from a Watch stream, across reconnects.

    `endpoints` is the server's state as last streamed while the mirror is connected. Once it
    has had no connection for `stale_after` seconds (the stream failed and has not resynced,
    or, with heartbeats on, nothing arrived for that long), `endpoints` is replaced by copies
    marked stale, with the typed scalars absent (so `metric_or_worst` ranks them as the worst
    case) and a `last_error` saying so: the data layer's own rule that a signal not read
    within the staleness threshold is not known applies to the mirror's copy too, and a
    scheduler that skips stale endpoints needs no extra check. The server's state is kept
    aside and put back when the next stream has synced, so a resume that replays only the
    gap restores the endpoints that did not change.
    """

    def __init__(
        self,
        client: DataLayerClient,
        selector: str = "",
        names: tuple[str, ...] = (),
        attributes: tuple[str, ...] = (),
        on_response: WatchCallback | None = None,
        min_interval: float = 0.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 1.0,
        stale_after: float = 2.0,
        heartbeat_interval: float | None = None,
    ) -> None:
        self.client = client
        self.selector = selector
        self.names = names
        self.attributes = attributes
        self.on_response = on_response
        self.min_interval = min_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        #: Seconds without a connection after which the view is marked stale.
        self.stale_after = stale_after
        #: Heartbeats asked of the server, so a silent (hung, partitioned) server is noticed
        #: too; None: half of `stale_after` (at least the server's 0.1 s floor); 0: off.
        self.heartbeat_interval = (
            max(0.1, stale_after / 2) if heartbeat_interval is None else heartbeat_interval
        )
        #: What schedulers read: the server's state, or its stale-marked copy (see the class).
        self.endpoints: dict[str, pb.Endpoint] = {}
        self.revision = 0
        self.instance_id = ""
        #: Set once the current stream has delivered the initial state.
        self.synced = asyncio.Event()
        self.reconnects = 0
        #: True from a stream's synced response until that stream is lost.
        self.connected = False
        #: `time.monotonic()` when the mirror lost (or, before the first sync, started looking
        #: for) its connection; None while connected.
        self.disconnected_since: float | None = time.monotonic()
        #: True while `endpoints` holds the stale-marked copy.
        self.view_stale = False
        self._server: dict[str, pb.Endpoint] = self.endpoints
        #: A full snapshot being received (swapped into `_server` at its SYNCED).
        self._incoming: dict[str, pb.Endpoint] | None = None
        self._stale_task: asyncio.Task[None] | None = None
        self._last_response = 0.0
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
            if not self.connected:
                self.disconnected_since = time.monotonic()
            self._task = asyncio.create_task(self.run(), name="endpoint-mirror")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._cancel_stale_timer()

    def disconnected_for(self) -> float:
        """Seconds since the connection was lost (0 while connected)."""
        since = self.disconnected_since
        return 0.0 if since is None else time.monotonic() - since

    async def wait_for(self, predicate: Callable[[EndpointMirror], bool]) -> None:
        """Wait until `predicate(mirror)` holds after some response was applied (or the view
        was marked stale)."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    async def run(self) -> None:
        """Stream forever: reconnect with jittered backoff, resuming from the last revision."""
        delay = self.backoff_initial
        self._arm_stale_timer()
        while True:
            stream = self.client.watch(
                self.selector,
                self.names,
                self.attributes,
                min_interval=self.min_interval,
                heartbeat_interval=self.heartbeat_interval,
                resume_revision=self.revision,
                resume_instance_id=self.instance_id,
                # Across replicas an unreachable one must fail fast, so the next is tried.
                wait_for_ready=not self.client.replicated,
            )
            try:
                first = True
                while True:
                    # Silence counts only once the stream is live: a restarted server may
                    # hold the first response until its discovery has synced.
                    silence = self.stale_after if self.heartbeat_interval and not first else None
                    try:
                        async with asyncio.timeout(silence):
                            response = await anext(stream)
                    except StopAsyncIteration:
                        log.info("watch stream ended by the server; reconnecting")
                        break
                    except TimeoutError:
                        log.info("watch stream silent for %.1fs; reconnecting", silence)
                        # Lost since the last thing it said, not since the silence was noticed.
                        self.disconnected_since = self._last_response
                        break
                    self._last_response = time.monotonic()
                    await self._apply(response, first)
                    first = False
                    delay = self.backoff_initial
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                log.info("watch stream failed (%s); reconnecting", exc.code().name)
            finally:
                await stream.aclose()
            self._lost()
            self.reconnects += 1
            if self.client.replicated:
                # Another replica serves the same endpoints: go there at once; the resume
                # names this instance, so it answers with a full snapshot.
                self.client.failover()
                delay = self.backoff_initial
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self.backoff_max)

    def _lost(self) -> None:
        """The stream is gone: start the clock towards a stale view."""
        self.synced.clear()
        self.connected = False
        if self.disconnected_since is None:
            self.disconnected_since = time.monotonic()
        self._arm_stale_timer()

    def _arm_stale_timer(self) -> None:
        if self._stale_task is not None or self.view_stale or self.disconnected_since is None:
            return
        remaining = max(0.0, self.disconnected_since + self.stale_after - time.monotonic())
        self._stale_task = asyncio.create_task(self._mark_stale(remaining), name="mirror-stale")

    def _cancel_stale_timer(self) -> None:
        if self._stale_task is not None:
            self._stale_task.cancel()
            self._stale_task = None

    async def _mark_stale(self, delay: float) -> None:
        """After `delay`, replace the view by stale copies with absent typed scalars."""
        await asyncio.sleep(delay)
        self._stale_task = None
        if self.connected or self.view_stale:
            return
        self.view_stale = True
        reason = (
            f"mirror: no connection to the data layer at {self.client.target} "
            f"for more than {self.stale_after:g}s"
        )
        self.endpoints = {name: _stale_copy(e, reason) for name, e in self._server.items()}
        log.warning("%s; %d endpoints marked stale", reason, len(self.endpoints))
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _apply(self, response: pb.WatchResponse, first_of_stream: bool) -> None:
        if first_of_stream:
            # A full snapshot (another replica, or history lost) is built aside and swapped
            # in whole at SYNCED: readers never see a half-received view, and whatever the
            # snapshot lacks (removed meanwhile) goes, so no removal is lost across failover.
            self._incoming = {} if response.full_snapshot else None
        view = self._server if self._incoming is None else self._incoming
        for event in response.events:
            if event.type == pb.WatchEvent.REMOVED:
                view.pop(event.endpoint.name, None)
            else:
                view[event.endpoint.name] = event.endpoint
        self.revision = response.revision
        self.instance_id = response.instance_id
        if response.synced and self._incoming is not None:
            gone = self._server.keys() - self._incoming.keys()
            if gone:
                log.info("full snapshot from %s: %d endpoints gone", self.client.target, len(gone))
            self._server.clear()
            self._server.update(self._incoming)
            self._incoming = None
        if response.synced:
            self.synced.set()
            self.connected = True
            self.disconnected_since = None
            self._cancel_stale_timer()
            if self.view_stale:
                self.view_stale = False
                self.endpoints = self._server
                log.info("mirror resynced with %s", self.client.target)
        if self.on_response is not None:
            self.on_response(response)
        await self._notify()


def _stale_copy(endpoint: pb.Endpoint, reason: str) -> pb.Endpoint:
    """`endpoint` as the mirror can vouch for it after losing the server: stale, typed
    scalars and LoRA lists absent (not known), custom values dropped (missing = worst)."""
    out = pb.Endpoint()
    out.CopyFrom(endpoint)
    out.stale = True
    out.last_error = f"{reason}; {endpoint.last_error}" if endpoint.last_error else reason
    metrics = out.metrics
    for name in OPTIONAL_METRICS:
        metrics.ClearField(name)
    del metrics.active_models[:]
    del metrics.waiting_models[:]
    metrics.custom.clear()
    metrics.custom_update_time.clear()
    return out
