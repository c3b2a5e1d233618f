"""kv-events-data-source + kv-block-index over real ZMQ sockets on loopback.

Each pod is a real PUB socket (mockpod.kv_events.KvEventPublisher, vLLM's wire
format) on its own loopback address (127.0.0.x, all on one port, as pods on
their own IPs are); the source subscribes as discovery says, and a sink runs
the extractor as the collector does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import zmq
import zmq.asyncio

from datalayer.model import EndpointSpec, EndpointUpdate
from mockpod.kv_events import BlockCache, KvEventPublisher
from plugins.extractors.kv_block_index.extractor import (
    ATTRIBUTE,
    KvBlockIndexExtractor,
    KvBlockIndexParameters,
)
from plugins.sources.kv_events.source import KvEventsDataSource, KvEventsSourceParameters
from plugins.sources.kv_events.wire import encode_batch

from stack import eventually, free_port

MODEL = "mock-model"


class ExtractingSink:
    """What the collector does with a delivery: run the extractors into an update."""

    def __init__(self, extractor: KvBlockIndexExtractor, specs: dict[str, EndpointSpec]) -> None:
        self.extractor = extractor
        self.specs = specs
        self.attributes: dict[str, dict[str, Any]] = {}
        self.deliveries = 0

    def deliver(self, endpoint_name: str, payload: Any) -> bool:
        spec = self.specs.get(endpoint_name)
        if spec is None:
            return False
        update = EndpointUpdate()
        self.extractor.extract(payload, spec, update)
        value = update.attributes[ATTRIBUTE]
        assert isinstance(value, dict), update.errors
        self.attributes[endpoint_name] = value
        self.deliveries += 1
        return True


class Harness:
    def __init__(self, port: int, replay_port: int | None) -> None:
        self.context = zmq.asyncio.Context()
        self.port = port
        self.replay_port = replay_port
        self.extractor = KvBlockIndexExtractor("kv-block-index", KvBlockIndexParameters())
        self.source = KvEventsDataSource(
            "kv-events", KvEventsSourceParameters(port=port, replay_port=replay_port)
        )
        self.source.start([self.extractor])
        self.specs: dict[str, EndpointSpec] = {}
        self.sink = ExtractingSink(self.extractor, self.specs)
        self.pubs: dict[str, KvEventPublisher] = {}
        self.task: asyncio.Task[None] | None = None

    async def add_pod(self, name: str, host: str) -> KvEventPublisher:
        pub = KvEventPublisher(
            self.context,
            host=host,
            port=self.port,
            replay_port=self.replay_port,
            topic=f"kv@{host}@{MODEL}",
        )
        self.pubs[name] = pub
        self.specs[name] = EndpointSpec(name, host, 8000)
        self.source.update_endpoints(dict(self.specs))
        await self.connected(name)
        return pub

    def remove_pod(self, name: str) -> None:
        del self.specs[name]
        self.source.update_endpoints(dict(self.specs))

    async def connected(self, name: str) -> None:
        """PUB drops what it sends before the SUB has joined: probe with empty batches."""
        pub = self.pubs[name]

        async def joined() -> bool:
            if name in self.sink.attributes:
                return True
            pub.publish([])
            return False

        await eventually(joined, timeout=10, what=f"{name} subscribed")

    def attribute(self, name: str) -> dict[str, Any]:
        return self.sink.attributes.get(name, {})

    def match(self, tokens: list[int], model: str = MODEL) -> tuple[dict[str, int], int]:
        return self.extractor.index.match(model, tokens)


@pytest.fixture
async def harness_factory() -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    made: list[Harness] = []

    async def make(replay: bool = False) -> Harness:
        port = free_port()
        harness = Harness(port, free_port() if replay else None)
        harness.task = asyncio.create_task(harness.source.run(harness.sink))
        made.append(harness)
        return harness

    yield make
    for harness in made:
        assert harness.task is not None
        harness.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await harness.task
        for pub in harness.pubs.values():
            await pub.close()
        harness.context.term()


async def until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    async def wrapped() -> bool:
        return check()

    await eventually(wrapped, timeout=timeout, what=what)


PROMPT = list(range(100, 164))  # 64 tokens: 4 blocks of 16


@pytest.mark.parametrize("shape", ["array", "map"])
async def test_stored_blocks_are_matched_in_both_shapes(harness_factory: Any, shape: str) -> None:
    h = await harness_factory()
    pub = await h.add_pod("pod-a", "127.0.0.2")
    cache = BlockCache(block_size=16, shape=shape)  # type: ignore[arg-type]
    pub.publish(cache.prompt(PROMPT))
    await until(lambda: h.match(PROMPT) == ({"pod-a": 4}, 4), "4 blocks indexed")
    assert h.match(PROMPT[:40]) == ({"pod-a": 2}, 2)
    assert h.match([1, *PROMPT[1:]]) == ({}, 4)
    assert h.attribute("pod-a")["blocks"] == 4


async def test_eviction_removes_and_clear_drops_everything(harness_factory: Any) -> None:
    h = await harness_factory()
    pub = await h.add_pod("pod-a", "127.0.0.2")
    cache = BlockCache(block_size=16, capacity=6)
    pub.publish(cache.prompt(PROMPT))
    other = list(range(500, 532))  # 2 more blocks: the cache holds 6, so the oldest 0 go
    pub.publish(cache.prompt(other))
    await until(lambda: h.match(other) == ({"pod-a": 2}, 2), "second prompt indexed")
    third = list(range(900, 932))  # 2 more: evicts PROMPT's first two blocks
    pub.publish(cache.prompt(third))
    await until(lambda: h.match(PROMPT) == ({}, 4), "evicted head no longer matches")
    assert h.attribute("pod-a")["removed"] == 1
    pub.publish(cache.reset())
    await until(lambda: h.match(third) == ({}, 2), "cleared")
    assert h.attribute("pod-a")["blocks"] == 0
    assert h.attribute("pod-a")["cleared"] == 1


async def test_endpoint_removal_drops_its_blocks_and_its_subscription(harness_factory: Any) -> None:
    h = await harness_factory()
    a = await h.add_pod("pod-a", "127.0.0.2")
    b = await h.add_pod("pod-b", "127.0.0.3")
    a.publish(BlockCache().prompt(PROMPT))
    b.publish(BlockCache().prompt(PROMPT))
    await until(lambda: h.match(PROMPT) == ({"pod-a": 4, "pod-b": 4}, 4), "both indexed")
    h.remove_pod("pod-a")
    assert h.match(PROMPT) == ({"pod-b": 4}, 4)
    deliveries = h.sink.deliveries
    a.publish(BlockCache().prompt(list(range(64))))
    b.publish([])
    await until(lambda: h.sink.deliveries > deliveries, "pod-b still delivered")
    await asyncio.sleep(0.1)
    assert "pod-a" not in h.source.sequences
    assert h.match(list(range(64))) == ({}, 4)


async def test_gap_without_replay_is_recorded(harness_factory: Any) -> None:
    h = await harness_factory()
    pub = await h.add_pod("pod-a", "127.0.0.2")
    cache = BlockCache()
    pub.publish(cache.prompt(PROMPT[:32]), send=False)  # lost
    pub.publish(cache.prompt(PROMPT[:32]), send=False)  # lost
    pub.publish([])
    await until(lambda: h.attribute("pod-a").get("gaps") == 1, "gap recorded")
    attribute = h.attribute("pod-a")
    assert attribute["missed"] == 2
    assert attribute["replayed"] == 0
    assert attribute["lastSeq"] == pub.seq - 1
    assert h.match(PROMPT) == ({}, 4)


async def test_gap_with_replay_recovers_in_order(harness_factory: Any) -> None:
    h = await harness_factory(replay=True)
    pub = await h.add_pod("pod-a", "127.0.0.2")
    cache = BlockCache()
    pub.publish(cache.prompt(PROMPT[:32]), send=False)  # lost: blocks 0-1
    pub.publish(cache.prompt(PROMPT), send=False)  # lost: blocks 2-3, children of 0-1
    pub.publish(cache.prompt(PROMPT + list(range(16))))  # block 4, child of 3: needs the replay
    await until(lambda: h.match(PROMPT + list(range(16))) == ({"pod-a": 5}, 5), "recovered")
    attribute = h.attribute("pod-a")
    assert (attribute["gaps"], attribute["replayed"], attribute["missed"]) == (1, 2, 0)
    assert attribute["orphaned"] == 0


async def test_malformed_frames_are_counted_and_skipped(harness_factory: Any) -> None:
    h = await harness_factory()
    pub = await h.add_pod("pod-a", "127.0.0.2")
    topic = pub.topic
    seq = pub.seq
    pub.send_raw([topic, b"only two frames"])
    pub.send_raw([topic, b"\x00\x01", b"seq not 8 bytes"])
    pub.send_raw([topic, seq.to_bytes(8, "big"), b"\xc1 not msgpack"])
    pub.send_raw([topic, (seq + 1).to_bytes(8, "big"), encode_batch(0.0, [["Bogus", 1], 7])])
    pub.seq = seq + 2
    pub.publish(BlockCache().prompt(PROMPT))
    await until(lambda: h.match(PROMPT) == ({"pod-a": 4}, 4), "the good batch indexed")
    assert h.attribute("pod-a")["malformed"] == 5  # 3 messages + 2 events in the 4th


async def test_restart_drops_the_engines_blocks(harness_factory: Any) -> None:
    h = await harness_factory()
    pub = await h.add_pod("pod-a", "127.0.0.2")
    pub.publish(BlockCache().prompt(PROMPT))
    await until(lambda: h.match(PROMPT) == ({"pod-a": 4}, 4), "indexed")
    pub.restart()
    pub.publish([])
    await until(lambda: h.attribute("pod-a").get("restarts") == 1, "restart seen")
    assert h.match(PROMPT) == ({}, 4)


async def test_hundred_publishers_at_once(harness_factory: Any) -> None:
    h = await harness_factory()
    pubs = {}
    for i in range(100):
        name = f"pod-{i}"
        pubs[name] = KvEventPublisher(
            h.context, host=f"127.0.0.{i + 2}", port=h.port, topic=f"kv@x@{MODEL}"
        )
        h.pubs[name] = pubs[name]
        h.specs[name] = EndpointSpec(name, f"127.0.0.{i + 2}", 8000)
    h.source.update_endpoints(dict(h.specs))
    await asyncio.gather(*(h.connected(name) for name in pubs))
    for i, pub in enumerate(pubs.values()):
        # pod i holds the first (i % 4) + 1 blocks of PROMPT, plus its own 3-block prompt
        pub.publish(BlockCache().prompt(PROMPT[: 16 * (i % 4 + 1)]))
        pub.publish(BlockCache().prompt([10_000 + i] * 48))
    expected = {f"pod-{i}": i % 4 + 1 for i in range(100)}
    await until(lambda: h.match(PROMPT) == (expected, 4), "all 100 indexed", timeout=10)
    for i in range(100):
        assert h.match([10_000 + i] * 48) == ({f"pod-{i}": 3}, 3)
    assert all(h.attribute(name)["gaps"] == 0 for name in pubs)
