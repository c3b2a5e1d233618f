"""One mock pod's KV-cache events: its prefills go through a `BlockCache` and out as events.

The stand-in tokenizer (the mock has no real one, and a scheduler must be able to
reproduce its token IDs in any language): a prompt given as token IDs is used as
is; text is its UTF-8 bytes, one token per byte; a chat is
`"<role>: <content>\n"` per message, as UTF-8 bytes. Block boundaries then fall
every `block_size` bytes, so two prompts sharing a 64-byte prefix share 4 blocks
(at the default 16).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import zmq.asyncio

from mockpod.kv_events import BlockCache, KvEventPublisher, Shape

#: Tokens taken from one prompt (the rest are not cached, as past max_model_len).
MAX_PROMPT_TOKENS: Final = 262_144


def stand_in_tokens(body: Mapping[str, Any], *, chat: bool) -> list[int]:
    """The prompt's token IDs by the stand-in tokenizer (see the module docstring)."""
    if chat:
        text = "".join(
            f"{m.get('role', '')}: {m.get('content', '')}\n"
            for m in body.get("messages") or []
            if isinstance(m, Mapping) and isinstance(m.get("content", ""), str)
        )
        return list(text.encode()[:MAX_PROMPT_TOKENS])
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return list(prompt.encode()[:MAX_PROMPT_TOKENS])
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, int) for p in prompt):
            return [int(p) for p in prompt[:MAX_PROMPT_TOKENS]]
        first = prompt[0]
        if isinstance(first, str):
            return list(first.encode()[:MAX_PROMPT_TOKENS])
        if isinstance(first, list) and all(isinstance(p, int) for p in first):
            return [int(p) for p in first[:MAX_PROMPT_TOKENS]]
    return []


class PodKvEvents:
    """The publisher and the block cache of one pod."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        replay_port: int | None,
        model: str,
        block_size: int,
        capacity_blocks: int,
        shape: Shape,
    ) -> None:
        self.model = model
        self.cache = BlockCache(block_size, capacity_blocks, shape)
        self.publisher = KvEventPublisher(
            zmq.asyncio.Context.instance(),
            host=host,
            port=port,
            replay_port=replay_port,
            topic=f"kv@{host}@{model}",
        )

    def prefill(self, model: str, tokens: list[int]) -> None:
        """A request's prompt entered the cache: publish what was stored and evicted."""
        lora = model if model != self.model else None
        events = self.cache.prompt(tokens, lora_name=lora)
        if events:
            self.publisher.publish(events)

    def reset(self) -> None:
        """`reset_prefix_cache`: one AllBlocksCleared."""
        self.publisher.publish(self.cache.reset())

    def report(self) -> dict[str, Any]:
        return {
            "port": self.publisher.port,
            "replay_port": self.publisher.replay_port,
            "cached_blocks": len(self.cache),
            "seq": self.publisher.seq,
            "shape": self.cache.shape,
        }

    async def close(self) -> None:
        await self.publisher.close()
