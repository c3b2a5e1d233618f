"""kv-block-index: the index against a brute-force reference on generated event streams.

The reference keeps, per (pod, medium), the full token prefix each held engine
block ends, and answers "how many leading chunks of this prompt does the pod
hold" by comparing token tuples: no hashing, no chaining, no engine map. An own
chunk belongs to the engine block in which it completes, so the reference holds
chunk P (a prefix whose length is a multiple of the index's block size) when
the pod holds a block ending prefix Q with len(Q) - E < len(P) <= len(Q) and
P == Q[:len(P)].
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugins.extractors.kv_block_index.index import PrefixIndex
from plugins.sources.kv_events.wire import (
    BatchDecoder,
    cleared_event,
    encode_batch,
    removed_event,
    stored_event,
)

OWN = 4  # the index's block size in these tests (small: prefixes collide often)
MODELS = ("m1", "m2")
decoder = BatchDecoder()


@dataclass
class Pod:
    name: str
    engine_block: int
    bytes_hashes: bool
    #: (model, prefix tokens) of every block stored and not removed, per medium
    held: dict[str, set[tuple[str, tuple[int, ...]]]] = field(default_factory=dict)

    def engine_hash(self, model: str, prefix: tuple[int, ...]) -> int | bytes:
        value = hash((self.name, model, prefix)) & ((1 << 64) - 1)
        return value.to_bytes(32, "big") if self.bytes_hashes else value


@dataclass
class Reference:
    pods: dict[str, Pod]

    def match(self, model: str, tokens: list[int]) -> tuple[dict[str, int], int]:
        total = len(tokens) // OWN
        out: dict[str, int] = {}
        for pod in self.pods.values():
            blocks = set().union(*pod.held.values()) if pod.held else set()
            n = 0
            while n < total and self._holds(pod, blocks, model, tuple(tokens[: (n + 1) * OWN])):
                n += 1
            if n:
                out[pod.name] = n
        return out, total

    @staticmethod
    def _holds(
        pod: Pod, blocks: set[tuple[str, tuple[int, ...]]], model: str, p: tuple[int, ...]
    ) -> bool:
        e = pod.engine_block
        return any(
            m == model and len(q) - e < len(p) <= len(q) and q[: len(p)] == p for m, q in blocks
        )


def _publish(index: PrefixIndex, pod: Pod, model: str, events: list, shape: str) -> None:
    """Through the real wire format: encode as vLLM does, decode as the source does."""
    batch = decoder.decode(encode_batch(1.0, events))
    assert batch.malformed == 0
    index.apply(pod.name, model, batch.events)


operation = st.tuples(
    st.sampled_from(["store", "store", "store", "remove", "clear", "drop", "query"]),
    st.integers(0, 2),  # pod
    st.integers(0, 1_000_000),  # choice
    st.lists(st.integers(0, 2), min_size=1, max_size=24),  # tokens (a small alphabet)
    st.sampled_from(["GPU", "CPU", None]),
    st.sampled_from(["array", "map"]),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(operation, min_size=1, max_size=40),
    sizes=st.tuples(*[st.sampled_from([2, 4, 8]) for _ in range(3)]),
    bytes_hashes=st.booleans(),
)
def test_match_equals_brute_force(
    ops: list[tuple[str, int, int, list[int], str | None, str]],
    sizes: tuple[int, int, int],
    bytes_hashes: bool,
) -> None:
    index = PrefixIndex(block_size=OWN, capacity=1_000_000, seed="s")
    pods = {f"pod-{i}": Pod(f"pod-{i}", sizes[i], bytes_hashes) for i in range(3)}
    ref = Reference(pods)
    for kind, p, choice, tokens, medium, shape in ops:
        pod = pods[f"pod-{p}"]
        model = MODELS[choice % 2]
        medium_key = medium if medium == "CPU" else "GPU"
        held = pod.held.setdefault(medium_key, set())
        if kind == "store":
            e = pod.engine_block
            parents = sorted(q for m, q in held if m == model)
            parent = parents[choice % len(parents)] if parents and choice % 3 else ()
            count = max(1, len(tokens) // e)
            new = (tokens * e)[: count * e]
            hashes, prefix = [], parent
            for i in range(count):
                prefix = prefix + tuple(new[i * e : (i + 1) * e])
                hashes.append(pod.engine_hash(model, prefix))
                held.add((model, prefix))
            parent_hash = pod.engine_hash(model, parent) if parent else None
            event = stored_event(hashes, parent_hash, new, e, medium=medium, shape=shape)
            _publish(index, pod, model, [event], shape)
        elif kind == "remove" and held:
            victims = sorted(held)[choice % len(held) :][:3]
            for v in victims:
                held.discard(v)
            event = removed_event([pod.engine_hash(m, q) for m, q in victims], medium, shape=shape)
            _publish(index, pod, model, [event], shape)
        elif kind == "clear":
            pod.held.clear()
            _publish(index, pod, model, [cleared_event(shape=shape)], shape)
        elif kind == "drop":
            pod.held.clear()
            index.remove_endpoint(pod.name)
        elif kind == "query" or kind == "remove":
            known = sorted(q for pp in pods.values() for hs in pp.held.values() for m, q in hs)
            base = list(known[choice % len(known)]) if known else []
            prompt = base + tokens
            assert index.match(model, prompt) == ref.match(model, prompt)
        if choice % 5 == 0:
            index.sweep_all()  # sweeps finished or not, answers must not change
        for m in MODELS:
            for pp in pods.values():
                for hs in pp.held.values():
                    for mm, q in hs:
                        if mm == m:
                            assert index.match(m, list(q)) == ref.match(m, list(q))


def _aligned_store(
    index: PrefixIndex, pod: str, tokens: list[int], parent: int | None = None
) -> list[int]:
    """Store `tokens` as 4-token engine blocks with hashes 1000+i; returns the hashes."""
    hashes = [
        hash((pod, i, tuple(tokens[: (i + 1) * OWN]))) & 0xFFFFFFFF
        for i in range(len(tokens) // OWN)
    ]
    event = stored_event(hashes, parent, tokens, OWN)
    index.apply(pod, "m", decoder.decode(encode_batch(0.0, [event])).events)
    return hashes


def test_lru_capacity_drops_the_least_recently_stored() -> None:
    index = PrefixIndex(block_size=OWN, capacity=256)
    old = list(range(40))  # 10 blocks
    _aligned_store(index, "a", old)
    for i in range(300):  # 300 distinct one-block chains push the old ones out
        _aligned_store(index, "b", [1000 + i, 1, 2, 3])
    assert index.key_count() <= 256
    assert index.match("m", old) == ({}, 10)
    assert index.endpoints["a"].blocks["GPU"] == 0
    assert index.endpoints["a"].evicted == 10


def test_clear_is_visible_at_once_and_the_id_is_reused_after_the_sweep() -> None:
    index = PrefixIndex(block_size=OWN)
    tokens = list(range(16))
    _aligned_store(index, "a", tokens)
    _aligned_store(index, "b", tokens)
    index.apply("a", "m", decoder.decode(encode_batch(0.0, [cleared_event()])).events)
    assert index.match("m", tokens) == ({"b": 4}, 4)
    index.sweep_all()
    _aligned_store(index, "c", tokens[:8])  # reuses a's old id: must not inherit its bits
    assert index.match("m", tokens) == ({"b": 4, "c": 2}, 4)


def test_unknown_parent_is_counted_not_guessed() -> None:
    index = PrefixIndex(block_size=OWN)
    _aligned_store(index, "a", [1, 2, 3, 4], parent=424242)
    assert index.endpoints["a"].orphaned_events == 1
    assert index.key_count() == 0


def test_token_count_not_matching_blocks_is_counted() -> None:
    index = PrefixIndex(block_size=OWN)
    event = stored_event([1, 2], None, [1, 2, 3], OWN)
    index.apply("a", "m", decoder.decode(encode_batch(0.0, [event])).events)
    assert index.endpoints["a"].inconsistent_events == 1


def test_lora_name_roots_its_own_chains() -> None:
    index = PrefixIndex(block_size=OWN)
    event = stored_event([7], None, [1, 2, 3, 4], OWN, lora_name="sql-lora")
    index.apply("a", "base", decoder.decode(encode_batch(0.0, [event])).events)
    assert index.match("sql-lora", [1, 2, 3, 4]) == ({"a": 1}, 1)
    assert index.match("base", [1, 2, 3, 4]) == ({}, 1)


def test_extra_keys_make_a_different_block() -> None:
    index = PrefixIndex(block_size=OWN)
    event = stored_event([7], None, [1, 2, 3, 4], OWN, extra_keys=[["img-hash"]])
    index.apply("a", "m", decoder.decode(encode_batch(0.0, [event])).events)
    assert index.key_count() == 1
    assert index.match("m", [1, 2, 3, 4]) == ({}, 1)  # a text prompt is not that image block


def test_removal_of_one_medium_keeps_the_other() -> None:
    index = PrefixIndex(block_size=OWN)
    for medium in ("GPU", "CPU"):
        event = stored_event([7], None, [1, 2, 3, 4], OWN, medium=medium)
        index.apply("a", "m", decoder.decode(encode_batch(0.0, [event])).events)
    index.apply("a", "m", decoder.decode(encode_batch(0.0, [removed_event([7], "GPU")])).events)
    assert index.match("m", [1, 2, 3, 4]) == ({"a": 1}, 1)
    index.apply("a", "m", decoder.decode(encode_batch(0.0, [removed_event([7], "CPU")])).events)
    assert index.match("m", [1, 2, 3, 4]) == ({}, 1)
