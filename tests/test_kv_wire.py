"""The KV-event wire decoder: every shape vLLM has sent, and what it refuses (counted)."""

from __future__ import annotations

import msgspec
import pytest

from plugins.sources.kv_events.wire import (
    CLEARED_TYPES,
    REMOVED_TYPES,
    STORED_TYPES,
    BatchDecoder,
    MalformedMessage,
    encode_batch,
)

enc = msgspec.msgpack.encode


def test_older_and_newer_array_events_decode() -> None:
    batch = BatchDecoder().decode(
        enc(
            [
                1.5,
                [
                    ["BlockStored", [1], None, [1, 2], 2, None],  # stops after lora_id
                    ["BlockStored", [2], 1, [3, 4], 2, 7, "CPU"],  # stops after medium
                    ["BlockStored", [3], 2, [5, 6], 2, None, "GPU", "sql", [["k"]], "x", 9],
                    ["BlockRemoved", [b"\x00" * 32]],  # no medium, bytes hash
                    ["AllBlocksCleared"],
                ],
                3,
            ]
        )
    )
    assert (batch.ts, batch.data_parallel_rank, batch.malformed) == (1.5, 3, 0)
    kinds = [type(e) for e in batch.events]
    assert [k in STORED_TYPES for k in kinds] == [True, True, True, False, False]
    assert kinds[3] in REMOVED_TYPES
    assert kinds[4] in CLEARED_TYPES
    older, mid, newer = batch.events[:3]
    assert (older.medium, mid.lora_id, mid.medium) == (None, 7, "CPU")  # type: ignore[union-attr]
    assert (newer.lora_name, newer.extra_keys) == ("sql", [["k"]])  # type: ignore[union-attr]


def test_map_events_with_defaults_omitted_decode() -> None:
    payload = enc(
        [
            0.0,
            [
                {"type": "BlockStored", "block_hashes": [5], "token_ids": [1], "block_size": 1},
                {"type": "BlockRemoved", "block_hashes": [5], "future_field": 1},
                {"type": "AllBlocksCleared"},
            ],
        ]
    )
    batch = BatchDecoder().decode(payload)
    assert batch.malformed == 0
    stored = batch.events[0]
    assert (stored.parent_block_hash, stored.medium, stored.lora_name) == (None, None, None)  # type: ignore[union-attr]
    assert batch.data_parallel_rank is None


def test_a_batch_mixing_shapes_and_bad_events_keeps_the_good_ones() -> None:
    payload = enc(
        [
            0.0,
            [
                ["BlockStored", [1], None, [1], 1, None],
                {"type": "BlockRemoved", "block_hashes": [1]},
                ["NoSuchEvent"],
                {"type": "BlockStored", "block_hashes": "not a list"},
                42,
            ],
        ]
    )
    batch = BatchDecoder().decode(payload)
    assert len(batch.events) == 2
    assert batch.malformed == 3


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1", enc({"not": "a batch"}), enc(["ts", []]), enc([0.0])],
)
def test_not_a_batch_is_malformed(payload: bytes) -> None:
    with pytest.raises(MalformedMessage):
        BatchDecoder().decode(payload)


def test_caps_drop_and_count() -> None:
    decoder = BatchDecoder(max_payload_bytes=10_000, max_events=3, max_blocks=4, max_tokens=8)
    events: list = [["AllBlocksCleared"]] * 5
    assert decoder.decode(encode_batch(0.0, events)).malformed == 2
    too_many_blocks = ["BlockStored", [1, 2, 3, 4, 5], None, [1] * 5, 1, None]
    too_many_tokens = ["BlockStored", [1], None, [1] * 9, 9, None]
    zero_size = ["BlockStored", [1], None, [], 0, None]
    removed = ["BlockRemoved", [1, 2, 3, 4, 5]]
    batch = decoder.decode(encode_batch(0.0, [too_many_blocks, too_many_tokens, zero_size]))
    assert (batch.events, batch.malformed) == ([], 3)
    assert decoder.decode(encode_batch(0.0, [removed])).malformed == 1
    with pytest.raises(MalformedMessage, match="cap"):
        decoder.decode(encode_batch(0.0, [["AllBlocksCleared"]] * 4000))
