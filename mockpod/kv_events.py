"""A vLLM-style KV-cache event publisher for the mock pod (and the tests and benchmarks).

What vLLM's ZmqEventPublisher does, as far as a subscriber can tell: a PUB socket
sending `[topic, seq (8-byte big-endian), msgpack batch]`, `seq` growing by one
per batch, the last `buffer_steps` batches kept for an optional replay ROUTER
(a request is the 8-byte start seq; the answer is `(seq, payload)` pairs from
there, then seq -1 with an empty payload). `BlockCache` is the engine side: a
bounded prefix cache over a prompt's blocks that reports what it stored and
what it evicted, in either event shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any, Literal

import zmq
import zmq.asyncio

from plugins.sources.kv_events.wire import cleared_event, encode_batch, removed_event, stored_event

Shape = Literal["array", "map"]


class KvEventPublisher:
    """PUB (+ optional replay ROUTER) on `host`; port 0 picks a free one (see `port`)."""

    def __init__(
        self,
        context: zmq.asyncio.Context,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        replay_port: int | None = None,
        topic: str = "kv@127.0.0.1@mock-model",
        buffer_steps: int = 10_000,
    ) -> None:
        self.topic = topic.encode()
        self.seq = 0
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self._pub = context.socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._pub.setsockopt(zmq.SNDHWM, 100_000)
        self.port = _bind(self._pub, host, port)
        self._router: zmq.asyncio.Socket | None = None
        self.replay_port: int | None = None
        self._replay_task: asyncio.Task[None] | None = None
        if replay_port is not None:
            self._router = context.socket(zmq.ROUTER)
            self._router.setsockopt(zmq.LINGER, 0)
            self.replay_port = _bind(self._router, host, replay_port)
            self._replay_task = asyncio.get_running_loop().create_task(self._serve_replay())

    def publish(self, events: Sequence[list[Any] | dict[str, Any]], *, send: bool = True) -> int:
        """Send one batch; `send=False` numbers and buffers it without sending (a lost
        message, for gap tests: only the replay endpoint has it). Returns its seq."""
        seq = self.seq
        self.seq += 1
        payload = encode_batch(time.time(), list(events))
        self._buffer.append((seq, payload))
        if send:
            self._pub.send_multipart([self.topic, seq.to_bytes(8, "big"), payload])
        return seq

    def send_raw(self, frames: list[bytes]) -> None:
        """Any frames at all (malformed-input tests)."""
        self._pub.send_multipart(frames)

    def restart(self) -> None:
        """As a restarted engine: numbering from 0, nothing buffered."""
        self.seq = 0
        self._buffer.clear()

    async def _serve_replay(self) -> None:
        assert self._router is not None
        router = self._router
        while True:
            frames = await router.recv_multipart()
            if len(frames) != 3 or len(frames[2]) != 8:
                continue
            client, start = frames[0], int.from_bytes(frames[2], "big", signed=True)
            for seq, payload in list(self._buffer):
                if seq >= start:
                    await router.send_multipart([client, b"", seq.to_bytes(8, "big"), payload])
            await router.send_multipart([client, b"", (-1).to_bytes(8, "big", signed=True), b""])

    async def close(self) -> None:
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
        if self._router is not None:
            self._router.close(linger=0)
        self._pub.close(linger=0)


def _bind(socket: zmq.asyncio.Socket, host: str, port: int) -> int:
    if port == 0:
        return int(socket.bind_to_random_port(f"tcp://{host}"))
    socket.bind(f"tcp://{host}:{port}")
    return port


class BlockCache:
    """The engine's prefix cache, as events: full `block_size` blocks of a prompt, chained
    by hash; at most `capacity` blocks, the least recently used evicted (BlockRemoved)."""

    def __init__(self, block_size: int = 16, capacity: int = 4096, shape: Shape = "array") -> None:
        self.block_size = block_size
        self.capacity = capacity
        self.shape: Shape = shape
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def prompt(
        self, tokens: Sequence[int], lora_name: str | None = None
    ) -> list[list[Any] | dict[str, Any]]:
        """The events a prefill of `tokens` causes: the new blocks stored (one event, as
        vLLM batches them per request), then whatever that pushed out."""
        size = self.block_size
        events: list[list[Any] | dict[str, Any]] = []
        parent: int | None = None
        run_parent: int | None = None
        run: list[int] = []
        run_tokens: list[int] = []
        for start in range(0, len(tokens) - size + 1, size):
            chunk = tuple(tokens[start : start + size])
            block = hash((parent, lora_name, chunk)) & 0xFFFF_FFFF_FFFF_FFFF
            if block in self._blocks:
                self._blocks.move_to_end(block)
                if run:  # a cached block after new ones: the run ends (its own event)
                    events.append(self._stored(run, run_parent, run_tokens, lora_name))
                    run, run_tokens = [], []
            else:
                if not run:
                    run_parent = parent
                run.append(block)
                run_tokens.extend(chunk)
                self._blocks[block] = None
            parent = block
        if run:
            events.append(self._stored(run, run_parent, run_tokens, lora_name))
        evicted: list[int] = []
        while len(self._blocks) > self.capacity:
            evicted.append(self._blocks.popitem(last=False)[0])
        if evicted:
            events.append(removed_event(evicted, shape=self.shape))
        return events

    def _stored(
        self, hashes: list[int], parent: int | None, tokens: list[int], lora: str | None
    ) -> list[Any] | dict[str, Any]:
        return stored_event(
            hashes, parent, tokens, self.block_size, lora_name=lora, shape=self.shape
        )

    def reset(self) -> list[list[Any] | dict[str, Any]]:
        """`reset_prefix_cache`: everything gone, one AllBlocksCleared."""
        self._blocks.clear()
        return [cleared_event(shape=self.shape)]
