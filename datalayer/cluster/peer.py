"""One peer of a replica group: its own-shard Watch stream, and whether it is alive.

A peer is *alive* while its stream is up, for `grace` seconds after the stream
broke (a restart or a blip must not move its share back and forth), and, before
it was ever heard, for `startup_grace` seconds after this link started (replicas
of one rollout start within seconds of each other; optimism there means no
takeover churn at start-up). The stream asks for heartbeats at a quarter of the
grace, so a peer that goes silent without closing the connection (a partition)
counts as broken once nothing came for `grace` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf import duration_pb2

from datalayer.v1 import datalayer_pb2 as pb
from datalayer.v1 import datalayer_pb2_grpc as pb_grpc

log = logging.getLogger("datalayer.cluster")

#: (peer address, a response of its stream, whether it is the first of a new stream).
ResponseHandler = Callable[[str, pb.WatchResponse, bool], Awaitable[None]]
#: Receive limit for peer streams: a batch is cut at 3.5 MiB by the sender anyway.
_MAX_RECEIVE = 8 << 20
#: A peer sends its shard's changes at most this often (coalesced per endpoint between):
#: gRPC's cost is per message far more than per event, and at 50 ms scrapes a relay
#: 25 ms behind the owner is well inside any staleness threshold.
RELAY_INTERVAL = 0.025


class PeerLink:
    """Follows `address`'s `Watch(owned_only)`; owned by a `ShardGroup`, which cancels it."""

    def __init__(
        self,
        address: str,
        on_response: ResponseHandler,
        on_change: Callable[[], None],
        grace: float,
        startup_grace: float,
        token: str | None = None,
        retry: float = 0.2,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.address = address
        self._on_response = on_response
        self._on_change = on_change
        self.grace = grace
        self.startup_grace = startup_grace
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.retry = retry
        #: TLS towards the peer (None: plaintext), see `ShardGroup`.
        self.credentials = credentials
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        self.up = False
        self.ever_up = False
        self.down_since: float | None = None
        #: Responses received (for status and tests).
        self.responses = 0
        #: Set once a stream has delivered the peer's whole shard (its SYNCED).
        self.synced_once = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"peer {self.address}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def alive(self, now: float) -> bool:
        if self.up:
            return True
        if self.down_since is not None:
            return now - self.down_since < self.grace
        return now - self._started < self.startup_grace

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except (grpc.aio.AioRpcError, TimeoutError, OSError) as exc:
                log.debug("peer %s stream ended: %s", self.address, _why(exc))
            except Exception:
                log.exception("peer %s: following its shard failed", self.address)
            self._set_down()
            await asyncio.sleep(self.retry)

    async def _follow(self) -> None:
        heartbeat = duration_pb2.Duration()
        heartbeat.FromNanoseconds(int(max(self.grace / 4, 0.1) * 1e9))
        pace = duration_pb2.Duration()
        pace.FromNanoseconds(int(RELAY_INTERVAL * 1e9))
        request = pb.Subscription(owned_only=True, heartbeat_interval=heartbeat, min_interval=pace)
        options = [("grpc.max_receive_message_length", _MAX_RECEIVE)]
        if self.credentials is not None:
            channel = grpc.aio.secure_channel(self.address, self.credentials, options=options)
        else:
            channel = grpc.aio.insecure_channel(self.address, options=options)
        async with channel:
            call = pb_grpc.DataLayerStub(channel).Watch(request, metadata=self._metadata)
            first = True
            while True:
                # No response within the grace (heartbeats come 4x as often): a silent peer.
                response = await asyncio.wait_for(call.read(), self.grace)
                if response is grpc.aio.EOF:
                    return
                self.responses += 1
                if not self.up:
                    self.up = self.ever_up = True
                    self.down_since = None
                    log.info("peer %s is up", self.address)
                    self._on_change()
                await self._on_response(self.address, response, first)
                first = False
                if response.synced and not self.synced_once:
                    self.synced_once = True
                    self._on_change()

    def _set_down(self) -> None:
        if self.up:
            self.up = False
            self.down_since = asyncio.get_running_loop().time()
            log.warning("peer %s unreachable; it leaves after %gs", self.address, self.grace)
            self._on_change()
        elif self.down_since is None and self.ever_up:
            self.down_since = asyncio.get_running_loop().time()


def _why(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return type(exc).__name__
