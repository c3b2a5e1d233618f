"""vLLM's KV-cache event messages, decoded with msgspec into one shape.

The publisher (vllm/distributed/kv_events.py) sends a msgpack batch
`[ts, events, data_parallel_rank?]`. Each event is either a tagged array
(`["BlockStored", block_hashes, parent_block_hash, token_ids, block_size,
lora_id, medium, lora_name, extra_keys, ...]`: older releases stop early,
newer ones append fields) or, since mid-2026, a map with a `"type"` key whose
default-valued fields are omitted. msgspec cannot put array-like and map-like
structs in one union, so a batch is tried whole against the array shape, then
the map shape (one C call each on the fast path), and only a batch that fits
neither is split into raw events and decoded one by one, so that one bad event
costs that event and not its neighbours.

Hostile input costs bounded work: the payload size is capped before decoding
(decoding is linear in it), and events per batch, blocks per event and tokens
per event are capped after; whatever breaks a cap is counted and dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import msgspec

#: A block hash as the engine sends it: an int (the low 64 bits, vLLM's default) or bytes.
EngineHash: TypeAlias = int | bytes

MAX_PAYLOAD_BYTES: Final = 16 * 1024 * 1024
MAX_EVENTS_PER_BATCH: Final = 16_384
MAX_BLOCKS_PER_EVENT: Final = 65_536
MAX_TOKENS_PER_EVENT: Final = 1_048_576


# --- the array shape (msgspec array_like, tag = the first element) ---


class _ArrayStored(msgspec.Struct, array_like=True, tag="BlockStored"):
    block_hashes: list[EngineHash]
    parent_block_hash: EngineHash | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = None
    lora_name: str | None = None
    extra_keys: list[Any] | None = None


class _ArrayRemoved(msgspec.Struct, array_like=True, tag="BlockRemoved"):
    block_hashes: list[EngineHash]
    medium: str | None = None


class _ArrayCleared(msgspec.Struct, array_like=True, tag="AllBlocksCleared"):
    pass


class _ArrayBatch(msgspec.Struct, array_like=True):
    ts: float
    events: list[_ArrayStored | _ArrayRemoved | _ArrayCleared]
    data_parallel_rank: int | None = None


# --- the map shape (vLLM #42892: a "type" key, defaults omitted) ---


class _MapStored(msgspec.Struct, tag="BlockStored", tag_field="type"):
    block_hashes: list[EngineHash] = []
    parent_block_hash: EngineHash | None = None
    token_ids: list[int] = []
    block_size: int = 0
    lora_id: int | None = None
    medium: str | None = None
    lora_name: str | None = None
    extra_keys: list[Any] | None = None


class _MapRemoved(msgspec.Struct, tag="BlockRemoved", tag_field="type"):
    block_hashes: list[EngineHash] = []
    medium: str | None = None


class _MapCleared(msgspec.Struct, tag="AllBlocksCleared", tag_field="type"):
    pass


class _MapBatch(msgspec.Struct, array_like=True):
    ts: float
    events: list[_MapStored | _MapRemoved | _MapCleared]
    data_parallel_rank: int | None = None


class _RawBatch(msgspec.Struct, array_like=True):
    ts: float
    events: list[msgspec.Raw]
    data_parallel_rank: int | None = None


# --- what the rest of the code sees ---

#: A decoded event: the array and map structs carry the same field names, so consumers
#: read either through these aliases without knowing which shape arrived.
BlockStored: TypeAlias = _ArrayStored | _MapStored
BlockRemoved: TypeAlias = _ArrayRemoved | _MapRemoved
AllBlocksCleared: TypeAlias = _ArrayCleared | _MapCleared
Event: TypeAlias = BlockStored | BlockRemoved | AllBlocksCleared

STORED_TYPES: Final = (_ArrayStored, _MapStored)
REMOVED_TYPES: Final = (_ArrayRemoved, _MapRemoved)
CLEARED_TYPES: Final = (_ArrayCleared, _MapCleared)


@dataclass(slots=True)
class EventBatch:
    """One decoded message: its events (the valid ones) and how many were dropped."""

    ts: float
    events: list[Event]
    data_parallel_rank: int | None = None
    #: Events that did not decode or broke a cap, dropped from `events`.
    malformed: int = 0


class MalformedMessage(ValueError):
    """The whole message is unusable (not msgpack, not a batch, over the size cap)."""


@dataclass
class BatchDecoder:
    """Decodes payloads; reuse one per source (msgspec decoders are built once)."""

    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    max_events: int = MAX_EVENTS_PER_BATCH
    max_blocks: int = MAX_BLOCKS_PER_EVENT
    max_tokens: int = MAX_TOKENS_PER_EVENT
    _array: msgspec.msgpack.Decoder[_ArrayBatch] = field(
        default_factory=lambda: msgspec.msgpack.Decoder(_ArrayBatch), repr=False
    )
    _map: msgspec.msgpack.Decoder[_MapBatch] = field(
        default_factory=lambda: msgspec.msgpack.Decoder(_MapBatch), repr=False
    )
    _raw: msgspec.msgpack.Decoder[_RawBatch] = field(
        default_factory=lambda: msgspec.msgpack.Decoder(_RawBatch), repr=False
    )
    _array_event: msgspec.msgpack.Decoder[_ArrayStored | _ArrayRemoved | _ArrayCleared] = field(
        default_factory=lambda: msgspec.msgpack.Decoder(
            _ArrayStored | _ArrayRemoved | _ArrayCleared
        ),
        repr=False,
    )
    _map_event: msgspec.msgpack.Decoder[_MapStored | _MapRemoved | _MapCleared] = field(
        default_factory=lambda: msgspec.msgpack.Decoder(_MapStored | _MapRemoved | _MapCleared),
        repr=False,
    )

    def decode(self, payload: bytes | memoryview) -> EventBatch:
        """The batch in `payload`; raises MalformedMessage when nothing in it is usable."""
        if len(payload) > self.max_payload_bytes:
            raise MalformedMessage(
                f"payload of {len(payload)} bytes over the {self.max_payload_bytes}-byte cap"
            )
        whole: _ArrayBatch | _MapBatch | None = None
        try:
            whole = self._array.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            try:
                whole = self._map.decode(payload)
            except (msgspec.DecodeError, msgspec.ValidationError):
                whole = None
        if whole is not None:
            events: list[Event] = list(whole.events)
            batch = EventBatch(whole.ts, events, whole.data_parallel_rank)
        else:
            batch = self._decode_each(payload)
        self._enforce_caps(batch)
        return batch

    def _decode_each(self, payload: bytes | memoryview) -> EventBatch:
        try:
            raw = self._raw.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MalformedMessage(f"not a KV event batch: {exc}") from None
        batch = EventBatch(raw.ts, [], raw.data_parallel_rank)
        for item in raw.events[: self.max_events]:
            event = self._decode_event(item)
            if event is None:
                batch.malformed += 1
            else:
                batch.events.append(event)
        batch.malformed += max(0, len(raw.events) - self.max_events)
        return batch

    def _decode_event(self, raw: msgspec.Raw) -> Event | None:
        data = bytes(raw)
        if not data:
            return None
        first = data[0]
        # msgpack: fixmap 0x80-0x8f, map16 0xde, map32 0xdf; anything else tries the array shape.
        is_map = 0x80 <= first <= 0x8F or first in (0xDE, 0xDF)
        decoder: Any = self._map_event if is_map else self._array_event
        try:
            event: Event = decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        return event

    def _enforce_caps(self, batch: EventBatch) -> None:
        events = batch.events
        if len(events) > self.max_events:
            batch.malformed += len(events) - self.max_events
            del events[self.max_events :]
        kept: list[Event] = []
        for event in events:
            if isinstance(event, STORED_TYPES):
                if (
                    len(event.block_hashes) > self.max_blocks
                    or len(event.token_ids) > self.max_tokens
                    or event.block_size <= 0
                ):
                    batch.malformed += 1
                    continue
            elif isinstance(event, REMOVED_TYPES) and len(event.block_hashes) > self.max_blocks:
                batch.malformed += 1
                continue
            kept.append(event)
        if len(kept) != len(events):
            batch.events = kept


# --- encoding: the mock pod and the tests speak the publisher's side ---

_encoder = msgspec.msgpack.Encoder()


def encode_batch(
    ts: float, events: list[list[Any] | dict[str, Any]], rank: int | None = None
) -> bytes:
    """A payload as vLLM sends it; events given in either shape, as plain lists or dicts."""
    return _encoder.encode([ts, events, rank])


def stored_event(
    block_hashes: Sequence[EngineHash],
    parent: EngineHash | None,
    token_ids: list[int],
    block_size: int,
    *,
    lora_id: int | None = None,
    medium: str | None = "GPU",
    lora_name: str | None = None,
    extra_keys: list[Any] | None = None,
    shape: str = "array",
) -> list[Any] | dict[str, Any]:
    """A BlockStored event in `shape` "array" (tagged array) or "map" (defaults omitted)."""
    if shape == "array":
        return [
            "BlockStored",
            list(block_hashes),
            parent,
            token_ids,
            block_size,
            lora_id,
            medium,
            lora_name,
            extra_keys,
        ]
    event: dict[str, Any] = {
        "type": "BlockStored",
        "block_hashes": list(block_hashes),
        "token_ids": token_ids,
        "block_size": block_size,
    }
    optional = {
        "parent_block_hash": parent,
        "lora_id": lora_id,
        "medium": medium,
        "lora_name": lora_name,
        "extra_keys": extra_keys,
    }
    event.update({k: v for k, v in optional.items() if v is not None})
    return event


def removed_event(
    block_hashes: Sequence[EngineHash], medium: str | None = "GPU", *, shape: str = "array"
) -> list[Any] | dict[str, Any]:
    """A BlockRemoved event in `shape`."""
    if shape == "array":
        return ["BlockRemoved", list(block_hashes), medium]
    event: dict[str, Any] = {"type": "BlockRemoved", "block_hashes": list(block_hashes)}
    if medium is not None:
        event["medium"] = medium
    return event


def cleared_event(*, shape: str = "array") -> list[Any] | dict[str, Any]:
    """An AllBlocksCleared event in `shape`."""
    return ["AllBlocksCleared"] if shape == "array" else {"type": "AllBlocksCleared"}
