"""The mock pod's KV-cache events, end to end: HTTP completions -> ZMQ -> source -> index."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest

from datalayer.model import EndpointSpec, EndpointUpdate
from mockpod.kv_pod import stand_in_tokens
from mockpod.server import KV_EVENTS, start_pod
from mockpod.spec import PodSpec
from plugins.extractors.kv_block_index.extractor import (
    KvBlockIndexExtractor,
    KvBlockIndexParameters,
)
from plugins.sources.kv_events.source import KvEventsDataSource, KvEventsSourceParameters

from stack import eventually

PROMPT = "The quick brown fox jumps over the lazy dog, again and again and again."  # 72 bytes


class Sink:
    def __init__(self, extractor: KvBlockIndexExtractor, spec: EndpointSpec) -> None:
        self.extractor, self.spec = extractor, spec

    def deliver(self, name: str, payload: Any) -> bool:
        self.extractor.extract(payload, self.spec, EndpointUpdate())
        return True


@pytest.mark.parametrize("shape", ["array", "map"])
async def test_completions_publish_blocks_and_reset_clears_them(shape: str) -> None:
    pod = await start_pod(PodSpec(name="pod-a", kv_events_port=0, kv_events_shape=shape))
    publisher = pod.runner.app[KV_EVENTS].publisher
    kv_port = publisher.port
    extractor = KvBlockIndexExtractor("idx", KvBlockIndexParameters())
    source = KvEventsDataSource("kv", KvEventsSourceParameters(port=kv_port))
    source.start([extractor])
    spec = EndpointSpec("pod-a", "127.0.0.1", pod.port)
    source.update_endpoints({"pod-a": spec})
    task = asyncio.create_task(source.run(Sink(extractor, spec)))
    tokens = stand_in_tokens({"prompt": PROMPT}, chat=False)
    model = pod.spec.model
    try:
        async with aiohttp.ClientSession() as http:

            async def joined() -> bool:  # PUB drops what it sends before the SUB joined
                publisher.publish([])
                stats = source.sequences.get("pod-a")
                return stats is not None and stats.last_seq >= 0

            await eventually(joined, timeout=10, what="subscribed")
            body = {"model": model, "prompt": PROMPT, "max_tokens": 1}
            async with http.post(f"{pod.url}/v1/completions", json=body) as response:
                assert response.status == 200

            async def indexed() -> bool:
                return extractor.index.match(model, tokens) == ({"pod-a": 4}, 4)

            await eventually(indexed, timeout=10, what="the prompt's 4 blocks indexed")
            async with http.post(f"{pod.url}/control", json={"reset_prefix_cache": True}) as r:
                assert r.status == 200

            async def cleared() -> bool:
                return extractor.index.match(model, tokens) == ({}, 4)

            await eventually(cleared, what="cleared")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pod.close()


def test_stand_in_tokenizer_is_utf8_bytes() -> None:
    assert stand_in_tokens({"prompt": "hé"}, chat=False) == [104, 195, 169]
    assert stand_in_tokens({"prompt": [5, 6, 7]}, chat=False) == [5, 6, 7]
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    assert stand_in_tokens(chat, chat=True) == list(b"user: hi\n")
