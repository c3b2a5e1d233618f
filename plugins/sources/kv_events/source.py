"""`kv-events-data-source`: vLLM's (or SGLang's) KV-cache events over ZMQ, per endpoint.

An event-driven source (see `PushDataSource`): discovery's endpoint set decides
the subscriptions. Each endpoint gets one SUB socket connected to
`tcp://<address>:<port + rank>` (vLLM offsets the port by the data-parallel
rank), filtered by `topicFilter`. Frames are `[topic, seq (8-byte big-endian),
payload]`. One asyncio task per subscription awaits its socket (pyzmq's asyncio
API: the sockets' file descriptors are in the event loop, no thread per pod)
and, once woken, drains what is queued so one delivery, one index update and
one store commit cover many batches.

`seq` grows by one per batch. A jump is a gap: with `replayPort` the source asks
the pod's replay ROUTER for the missing batches (sends the 8-byte start seq;
replies `(seq, payload)` end with seq -1 and an empty payload) before applying
the batch that revealed the gap, so events stay in order; without it, or when
the replay cannot cover the gap, the missed count says so in the endpoint's
attributes. Bad frames and undecodable payloads are counted and skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

import zmq
import zmq.asyncio

from datalayer.model import EndpointSpec
from datalayer.parameters import Parameters, Port, PositiveInt
from datalayer.plugin import Extractor, PayloadSink, PushDataSource
from plugins.sources.kv_events.payload import (
    EndpointForgetter,
    KvEventsPayload,
    SequenceStats,
)
from plugins.sources.kv_events.sequence import Step, classify
from plugins.sources.kv_events.wire import (
    MAX_PAYLOAD_BYTES,
    BatchDecoder,
    EventBatch,
    MalformedMessage,
)

log = logging.getLogger(__name__)

#: Batches drained per wake-up before delivering: bounds one delivery's work.
DRAIN_LIMIT: Final = 256
#: Batches asked of a replay endpoint for one gap (vLLM buffers 10,000 steps by default).
MAX_REPLAY: Final = 10_000
REPLAY_TIMEOUT: Final = 1.0
END_OF_REPLAY: Final = -1


class KvEventsSourceParameters(Parameters):
    #: The publisher's port (vLLM's `endpoint`, tcp://*:5557); rank r listens on port + r.
    port: Port = 5557
    #: Topics subscribed to (a prefix match): vLLM's default topics are `kv@<pod-ip>@<model>`.
    topic_filter: str = "kv@"
    #: The replay ROUTER's port (vLLM's `replay_endpoint`), for recovering gaps; none: record.
    replay_port: Port | None = None
    #: Whose events: both publish vLLM's wire format; recorded for listings and attributes.
    engine_type: Literal["vllm", "sglang"] = "vllm"
    #: Larger messages are dropped by ZMQ itself (and the connection reset), never buffered.
    max_message_bytes: PositiveInt = MAX_PAYLOAD_BYTES
    #: The model when a topic names none (a topic without `@<model>`).
    default_model: str = ""
    #: An endpoint label whose value is that endpoint's publisher port, for several pods on
    #: one address (a host, the demo); endpoints without it use `port`.
    port_label: str = "datalayer.io/kv-events-port"


@dataclass(slots=True)
class _Subscription:
    spec: EndpointSpec
    socket: zmq.asyncio.Socket
    task: asyncio.Task[None] | None = None
    stats: SequenceStats | None = None


class KvEventsDataSource(PushDataSource):
    type_name = "kv-events-data-source"
    description = (
        "subscribes to each endpoint's KV-cache events (ZMQ, vLLM wire format); "
        "payload KvEventsPayload, for kv-block-index"
    )
    Parameters = KvEventsSourceParameters
    output_type = KvEventsPayload
    #: KV events say what a cache did, not how loaded a pod is: an idle pod publishes nothing,
    #: and that silence must not make it stale (datalayer/notifications.py).
    affects_staleness: ClassVar[bool] = False

    def __init__(self, name: str, params: KvEventsSourceParameters) -> None:
        super().__init__(name, params)
        self._params = params
        self._decoder = BatchDecoder(max_payload_bytes=params.max_message_bytes)
        self._context: zmq.asyncio.Context | None = None
        self._wanted: dict[str, EndpointSpec] = {}
        self._subs: dict[str, _Subscription] = {}
        self._sink: PayloadSink | None = None
        self._forgetters: list[EndpointForgetter] = []
        #: Every subscription's sequence stats by endpoint (kept for tests and /status).
        self.sequences: dict[str, SequenceStats] = {}

    # --- lifecycle ---

    def start(self, extractors: Sequence[Extractor] = ()) -> None:
        attached = list(extractors) or list(getattr(self, "extractors", []))
        self._forgetters = [e for e in attached if isinstance(e, EndpointForgetter)]

    def update_endpoints(self, endpoints: Mapping[str, EndpointSpec]) -> None:
        self._wanted = dict(endpoints)
        if self._sink is not None:
            self._reconcile()

    async def run(self, sink: PayloadSink) -> None:
        """Subscribe to every endpoint until cancelled, then close every socket."""
        self._context = zmq.asyncio.Context()
        self._sink = sink
        try:
            self._reconcile()
            await asyncio.Event().wait()
        finally:
            self._sink = None
            for name in list(self._subs):
                self._unsubscribe(name, forget=False)
            self._context.term()
            self._context = None

    def _reconcile(self) -> None:
        for name, sub in list(self._subs.items()):
            spec = self._wanted.get(name)
            if spec is None or (spec.address, self._port_of(spec)) != (
                sub.spec.address,
                self._port_of(sub.spec),
            ):
                self._unsubscribe(name, forget=True)
        for name, spec in self._wanted.items():
            if name not in self._subs:
                self._subscribe(spec)

    def _subscribe(self, spec: EndpointSpec) -> None:
        assert self._context is not None
        socket = self._context.socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, self._params.max_message_bytes + 4096)
        socket.setsockopt(zmq.RCVHWM, 100_000)
        socket.setsockopt(zmq.SUBSCRIBE, self._params.topic_filter.encode())
        if ":" in spec.address:
            socket.setsockopt(zmq.IPV6, 1)
        socket.connect(f"tcp://{_host(spec.address)}:{self._port_of(spec)}")
        stats = SequenceStats()
        sub = _Subscription(spec, socket, stats=stats)
        self._subs[spec.name] = sub
        self.sequences[spec.name] = stats
        sub.task = asyncio.get_running_loop().create_task(
            self._consume(sub), name=f"kv events {spec.name}"
        )

    def _port_of(self, spec: EndpointSpec) -> int:
        """vLLM binds rank r's publisher on the configured port + r."""
        base = self._params.port
        label = spec.labels.get(self._params.port_label) if self._params.port_label else None
        if label is not None and label.isdigit() and 0 < int(label) < 65536:
            base = int(label)
        rank: Any = getattr(spec, "rank", 0) or 0
        return base + int(rank)

    def _unsubscribe(self, name: str, *, forget: bool) -> None:
        sub = self._subs.pop(name)
        if sub.task is not None:
            sub.task.cancel()
        sub.socket.close(linger=0)
        self.sequences.pop(name, None)
        if forget:
            for extractor in self._forgetters:
                extractor.forget_endpoint(name)

    # --- receiving ---

    async def _consume(self, sub: _Subscription) -> None:
        socket = sub.socket
        while True:
            messages = [await socket.recv_multipart()]
            while len(messages) < DRAIN_LIMIT and _readable(socket):
                messages.append(await socket.recv_multipart())
            try:
                payload = await self._handle(sub, messages)
                sink = self._sink
                if payload is not None and sink is not None:
                    sink.deliver(sub.spec.name, payload)
            except (asyncio.CancelledError, zmq.ContextTerminated):
                raise
            except Exception:  # one bad delivery must not end the subscription
                log.exception("kv events %s: delivery failed", sub.spec.name)

    async def _handle(
        self, sub: _Subscription, messages: list[list[bytes]]
    ) -> KvEventsPayload | None:
        stats = sub.stats
        assert stats is not None
        model = ""
        restarted = False
        batches: list[EventBatch] = []
        for frames in messages:
            if len(frames) != 3 or len(frames[1]) != 8:
                stats.malformed += 1
                continue
            topic, seq_bytes, data = frames
            seq = int.from_bytes(seq_bytes, "big", signed=True)
            step = classify(stats, seq)
            if step is Step.STALE:
                continue
            if step is Step.RESTART:
                stats.restarts += 1
                restarted, batches = True, []
            elif step is Step.GAP:
                stats.gaps += 1
                batches.extend(await self._recover(sub, stats.last_seq + 1, seq))
            stats.last_seq = seq
            model = _topic_model(topic) or self._params.default_model
            batch = self._decode(stats, data)
            if batch is not None:
                batches.append(batch)
        if not batches and not restarted:
            return None
        return KvEventsPayload(model, batches, stats, restarted)

    def _decode(self, stats: SequenceStats, data: bytes) -> EventBatch | None:
        try:
            batch = self._decoder.decode(data)
        except MalformedMessage:
            stats.malformed += 1
            return None
        stats.malformed += batch.malformed
        return batch

    async def _recover(self, sub: _Subscription, first: int, until: int) -> list[EventBatch]:
        """Batches `first` .. `until - 1`, from the replay endpoint where it has them."""
        stats = sub.stats
        assert stats is not None
        wanted = until - first
        got: list[EventBatch] = []
        if self._params.replay_port is not None and self._context is not None:
            got = await self._replay(sub.spec, stats, first, until)
        stats.replayed += len(got)
        stats.missed += wanted - len(got)
        return got

    async def _replay(
        self, spec: EndpointSpec, stats: SequenceStats, first: int, until: int
    ) -> list[EventBatch]:
        assert self._context is not None
        assert self._params.replay_port is not None
        dealer = self._context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.MAXMSGSIZE, self._params.max_message_bytes + 4096)
        if ":" in spec.address:
            dealer.setsockopt(zmq.IPV6, 1)
        dealer.connect(f"tcp://{_host(spec.address)}:{self._params.replay_port}")
        got: list[EventBatch] = []
        expected = first
        deadline = time.monotonic() + REPLAY_TIMEOUT
        try:
            await dealer.send_multipart([b"", first.to_bytes(8, "big", signed=True)])
            while len(got) < min(until - first, MAX_REPLAY):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not await dealer.poll(remaining * 1000):
                    log.info("kv events %s: replay from %d timed out", spec.name, first)
                    break
                frames = await dealer.recv_multipart()
                if frames and frames[0] == b"":
                    frames = frames[1:]
                if len(frames) != 2 or len(frames[0]) != 8:
                    stats.malformed += 1
                    continue
                seq = int.from_bytes(frames[0], "big", signed=True)
                if seq == END_OF_REPLAY:
                    break
                if seq < expected or seq >= until:
                    continue  # before the gap, or past it (the live stream has it)
                expected = seq + 1
                batch = self._decode(stats, frames[1])
                if batch is not None:
                    got.append(batch)
        except zmq.ZMQError as exc:
            log.info("kv events %s: replay failed: %s", spec.name, exc)
        finally:
            dealer.close(linger=0)
        return got


def _readable(socket: zmq.asyncio.Socket) -> bool:
    return bool(int(socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN)


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _topic_model(topic: bytes) -> str:
    """`kv@<pod-ip>@<model>` -> the model (vLLM's default topic); "" when it names none."""
    parts = topic.split(b"@", 2)
    if len(parts) < 3:
        return ""
    return parts[2].decode("utf-8", "replace")[:256]
