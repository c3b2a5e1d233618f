"""The prefix-cache index: which endpoint holds which block, and the longest held prefix.

Entries are (own key, endpoint, medium). Each medium has its own `KeyTable`
(almost every entry is on the GPU; a CPU-offload tier is a second, usually small
table), so a BlockRemoved for one tier never drops the other. Endpoints are
small integer ids, bits of the tables' bitsets.

Dropping an endpoint (AllBlocksCleared, or it left discovery) must not cost a
scan of a million keys inside one event: its id is retired at once (a query
masks it out, so the drop is visible immediately) and its bits are swept out in
bounded steps on later ingests. An id is reused only after the sweep that
cleared it has finished, so a reused id never inherits stale bits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from plugins.extractors.kv_block_index.keys import KeyHasher, engine_hash, extra_digest
from plugins.extractors.kv_block_index.table import KeyTable, bits_of
from plugins.sources.kv_events.wire import (
    CLEARED_TYPES,
    REMOVED_TYPES,
    STORED_TYPES,
    BlockRemoved,
    BlockStored,
    Event,
)

#: Media that mean the engine's own (GPU) cache; vLLM leaves `medium` out or says "GPU".
DEFAULT_MEDIA: Final = frozenset({"", "GPU", "gpu"})
DEFAULT_MEDIUM: Final = "GPU"
#: Other tiers (CPU offload, disk) beyond which a medium name is folded into "other".
MAX_MEDIA: Final = 8
#: Keys cleared of retired ids per ingest call: bounds the pause a clear can cause.
SWEEP_STEP: Final = 4096


@dataclass(slots=True)
class EndpointStats:
    """What the index knows about one endpoint, for its attributes."""

    eid: int
    #: Entries per medium now in the index.
    blocks: dict[str, int] = field(default_factory=dict)
    stored_events: int = 0
    removed_events: int = 0
    cleared_events: int = 0
    #: BlockStored events whose parent block the index never saw (dropped: no prefix known).
    orphaned_events: int = 0
    #: Events whose shape did not add up (token count not blocks x block size).
    inconsistent_events: int = 0
    #: Entries the capacity bound pushed out (least recently stored first).
    evicted: int = 0

    @property
    def total_blocks(self) -> int:
        return sum(self.blocks.values())


@dataclass(slots=True)
class _ChainState:
    """Where an engine block leaves the index's chain when block sizes do not align."""

    keys: tuple[int, ...]
    last: int
    pending: tuple[int, ...]
    extras: tuple[object, ...]


class PrefixIndex:
    """Own-key index over every endpoint's KV blocks, bounded by `capacity` keys per medium."""

    def __init__(self, block_size: int = 16, capacity: int = 10_000_000, seed: str = "") -> None:
        self.hasher = KeyHasher(block_size, seed)
        self.block_size = block_size
        self.capacity = capacity
        self.tables: dict[str, KeyTable] = {
            DEFAULT_MEDIUM: KeyTable(DEFAULT_MEDIUM, capacity, self._dropped)
        }
        #: Engine block hash -> the own key(s) it produced (an int when sizes align, the
        #: common case; a `_ChainState` otherwise). Bounded like a table: an entry is only
        #: a cache of a content hash, still right after its keys left the index.
        self.engine: dict[int, int | _ChainState] = {}
        self.endpoints: dict[str, EndpointStats] = {}
        self._names: dict[int, str] = {}
        self._free: list[int] = []
        self._next_id = 0
        #: Retired ids whose bits may still be in the tables.
        self._dead = 0
        self._sweeping = 0
        self._sweep_keys: list[tuple[KeyTable, list[int]]] = []

    # --- ingest ---

    def apply(self, endpoint: str, model: str, events: Iterable[Event]) -> None:
        """Apply one pod's events in order; `model` roots chains without a LoRA name."""
        stats = self._stats(endpoint)
        for event in events:
            if isinstance(event, STORED_TYPES):
                self._stored(stats, model, event)
            elif isinstance(event, REMOVED_TYPES):
                self._removed(stats, event)
            elif isinstance(event, CLEARED_TYPES):
                stats.cleared_events += 1
                self._renew(stats)
        self.sweep_step()

    def _stored(self, stats: EndpointStats, model: str, event: BlockStored) -> None:
        stats.stored_events += 1
        size = event.block_size
        hashes = event.block_hashes
        tokens = event.token_ids
        if len(tokens) != len(hashes) * size:
            stats.inconsistent_events += 1
            return
        parent = event.parent_block_hash
        if parent is None:
            last = self.hasher.root(event.lora_name or model)
            pending: tuple[int, ...] = ()
            extras: tuple[object, ...] = ()
        else:
            state = self.engine.get(engine_hash(parent))
            if state is None:
                stats.orphaned_events += 1
                return
            if isinstance(state, int):
                last, pending, extras = state, (), ()
            else:
                last, pending, extras = state.last, state.pending, state.extras
        medium = self._medium(event.medium)
        table = self._table(medium)
        bit = 1 << stats.eid
        engine = self.engine
        own = self.block_size
        added = 0
        if own == size and not pending and not event.extra_keys:
            chunk_key = self.hasher.chunk_key
            for i, value in enumerate(hashes):
                last = chunk_key(last, tokens[i * size : (i + 1) * size])
                added += table.add(last, bit)
                h = engine_hash(value)
                engine.pop(h, None)
                engine[h] = last
        else:
            added = self._stored_unaligned(table, bit, event, last, pending, extras)
        if added:
            stats.blocks[medium] = stats.blocks.get(medium, 0) + added
        if len(engine) > self.capacity:
            self._evict_engine()

    def _stored_unaligned(
        self,
        table: KeyTable,
        bit: int,
        event: BlockStored,
        last: int,
        pending: tuple[int, ...],
        extras: tuple[object, ...],
    ) -> int:
        """Engine blocks that do not map one-to-one onto own chunks, or carry extra keys."""
        size, own = event.block_size, self.block_size
        tokens = event.token_ids
        block_extras = event.extra_keys or []
        added = 0
        for i, value in enumerate(event.block_hashes):
            buffer = pending + tuple(tokens[i * size : (i + 1) * size])
            extra_now = block_extras[i] if i < len(block_extras) else None
            chunk_extras = (*extras, extra_now) if extra_now is not None else extras
            keys: list[int] = []
            start = 0
            while len(buffer) - start >= own:
                last = self.hasher.chunk_key(
                    last, buffer[start : start + own], extra_digest(chunk_extras)
                )
                added += table.add(last, bit)
                keys.append(last)
                start += own
                # The rest of this engine block still carries its extra keys.
                chunk_extras = (extra_now,) if extra_now is not None else ()
            pending = buffer[start:]
            extras = chunk_extras if pending else ()
            h = engine_hash(value)
            self.engine.pop(h, None)
            if not pending and not extras and len(keys) == 1:
                self.engine[h] = last
            else:
                self.engine[h] = _ChainState(tuple(keys), last, pending, extras)
        return added

    def _removed(self, stats: EndpointStats, event: BlockRemoved) -> None:
        stats.removed_events += 1
        medium = self._medium(event.medium)
        table = self.tables.get(medium)
        if table is None:
            return
        bit = 1 << stats.eid
        removed = 0
        for value in event.block_hashes:
            state = self.engine.get(engine_hash(value))
            if state is None:
                continue
            if isinstance(state, int):
                removed += table.remove(state, bit)
            else:
                for key in state.keys:
                    removed += table.remove(key, bit)
        if removed:
            stats.blocks[medium] = max(0, stats.blocks.get(medium, 0) - removed)

    def _evict_engine(self) -> None:
        engine = self.engine
        count = len(engine) - self.capacity + self.capacity // 256
        for h in [h for h, _ in zip(engine, range(count), strict=False)]:
            del engine[h]

    # --- endpoints ---

    def _stats(self, endpoint: str) -> EndpointStats:
        stats = self.endpoints.get(endpoint)
        if stats is None:
            eid = self._free.pop() if self._free else self._new_id()
            stats = EndpointStats(eid)
            self.endpoints[endpoint] = stats
            self._names[eid] = endpoint
        return stats

    def _new_id(self) -> int:
        eid = self._next_id
        self._next_id += 1
        return eid

    def remove_endpoint(self, endpoint: str) -> None:
        """Drop everything `endpoint` holds (it left discovery); visible to queries at once."""
        self._retire(endpoint)

    def _renew(self, stats: EndpointStats) -> None:
        """AllBlocksCleared: the endpoint keeps its counters and gets a fresh, empty id."""
        name = self._names.pop(stats.eid)
        self._dead |= 1 << stats.eid
        stats.eid = self._free.pop() if self._free else self._new_id()
        stats.blocks.clear()
        self._names[stats.eid] = name
        self._start_sweep()

    def _retire(self, endpoint: str) -> None:
        stats = self.endpoints.pop(endpoint, None)
        if stats is None:
            return
        del self._names[stats.eid]
        self._dead |= 1 << stats.eid
        self._start_sweep()

    def _dropped(self, medium: str, eid: int, count: int) -> None:
        """A table evicted `count` of `eid`'s entries (LRU)."""
        name = self._names.get(eid)
        if name is None:
            return
        stats = self.endpoints[name]
        stats.blocks[medium] = max(0, stats.blocks.get(medium, 0) - count)
        stats.evicted += count

    def _start_sweep(self) -> None:
        """(Re)start the sweep over a fresh snapshot of every table's keys for all dead ids."""
        self._sweeping = self._dead
        self._sweep_keys = [(table, list(table.entries)) for table in self.tables.values()]

    def sweep_step(self, budget: int = SWEEP_STEP) -> None:
        """Clear up to `budget` keys of retired ids; free the ids once every table is done."""
        while self._sweep_keys and budget > 0:
            table, keys = self._sweep_keys[-1]
            part = keys[-budget:]
            del keys[-budget:]
            table.sweep(part, self._sweeping)
            budget -= len(part)
            if not keys:
                self._sweep_keys.pop()
        if not self._sweep_keys and self._sweeping:
            done = self._sweeping
            self._dead &= ~done
            self._sweeping = 0
            self._free.extend(bits_of(done))
            if self._dead:  # retired while the sweep ran: their bits need a new pass
                self._start_sweep()

    def sweep_all(self) -> None:
        """Finish any sweep now (tests, benchmarks)."""
        while self._sweep_keys or self._sweeping:
            self.sweep_step(1 << 30)

    # --- media ---

    def _medium(self, medium: str | None) -> str:
        if medium is None or medium in DEFAULT_MEDIA:
            return DEFAULT_MEDIUM
        if medium in self.tables or len(self.tables) < MAX_MEDIA:
            return medium
        return "other"

    def _table(self, medium: str) -> KeyTable:
        table = self.tables.get(medium)
        if table is None:
            table = self.tables[medium] = KeyTable(medium, self.capacity, self._dropped)
        return table

    # --- queries ---

    def match(self, model: str, tokens: Sequence[int]) -> tuple[dict[str, int], int]:
        """Per endpoint, how many of the prompt's leading full blocks it holds (only those
        holding at least one), and the number of full blocks in the prompt.

        Keys are hashed lazily and the walk stops when no endpoint still holds the prefix,
        so a miss costs one chunk hash, whatever the prompt's length."""
        size = self.block_size
        total = len(tokens) // size
        if total == 0:
            return {}, 0
        live = ~self._dead
        tables = [t.entries for t in self.tables.values() if t.entries]
        chunk_key = self.hasher.chunk_key
        parent = self.hasher.root(model)
        holders = -1  # everyone, until the first block
        matched: dict[int, int] = {}
        for i in range(total):
            parent = chunk_key(parent, tokens[i * size : (i + 1) * size])
            held = 0
            for entries in tables:
                held |= entries.get(parent, 0)
            now = holders & held & live
            if i and now != holders:
                for eid in bits_of(holders & ~now):
                    matched[eid] = i
            holders = now
            if not holders:
                break
        else:
            for eid in bits_of(holders):
                matched[eid] = total
        names = self._names
        return {names[e]: n for e, n in matched.items() if n and e in names}, total

    def entry_count(self) -> int:
        """(key, endpoint, medium) entries now held, retired ids excluded."""
        return sum(s.total_blocks for s in self.endpoints.values())

    def key_count(self) -> int:
        return sum(len(t) for t in self.tables.values())
