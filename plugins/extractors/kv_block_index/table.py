"""One medium's key table: own key -> bitset of endpoint ids, bounded, least recently stored out.

Why these shapes: at a million (block, pod) entries, per-entry objects decide the
memory. A key's pods are one Python int used as a bitset (no set, no per-pod
object; ids below 8 are CPython's cached small ints), and recency is the dict's
own insertion order (a store re-inserts the key at the end; eviction takes from
the front in batches), so there is no linked list beside the dict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice


def bits_of(mask: int) -> Iterator[int]:
    """The ids set in `mask`, lowest first."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


class KeyTable:
    """Bitsets of endpoint ids per key, at most `capacity` keys."""

    def __init__(
        self, medium: str, capacity: int, on_drop: Callable[[str, int, int], None]
    ) -> None:
        """`on_drop(medium, eid, count)` is told how many of an id's entries were evicted."""
        self.medium = medium
        self.capacity = capacity
        self.entries: dict[int, int] = {}
        self._on_drop = on_drop
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, key: int, bit: int) -> bool:
        """Mark `key` held by the id `bit` stands for and make it the newest; True if new."""
        entries = self.entries
        old = entries.pop(key, 0)
        entries[key] = old | bit
        if len(entries) > self.capacity:
            self._evict()
        return not old & bit

    def remove(self, key: int, bit: int) -> bool:
        """Unmark; True when the id held the key."""
        entries = self.entries
        old = entries.get(key)
        if old is None or not old & bit:
            return False
        rest = old & ~bit
        if rest:
            entries[key] = rest
        else:
            del entries[key]
        return True

    def _evict(self) -> None:
        """Drop the oldest 1/256 of the capacity at once: the scan past the dict's holes at
        its front is paid once per batch, not once per key."""
        entries = self.entries
        count = len(entries) - self.capacity + self.capacity // 256
        victims = list(islice(entries.items(), count))
        drops: dict[int, int] = {}
        for key, mask in victims:
            del entries[key]
            for eid in bits_of(mask):
                drops[eid] = drops.get(eid, 0) + 1
        self.evicted += len(victims)
        for eid, n in drops.items():
            self._on_drop(self.medium, eid, n)

    def sweep(self, keys: list[int], dead: int) -> None:
        """Clear the `dead` ids from `keys` (a slice of a snapshot; keys gone since are skipped)."""
        entries = self.entries
        keep = ~dead
        for key in keys:
            mask = entries.get(key)
            if mask is None or not mask & dead:
                continue
            rest = mask & keep
            if rest:
                entries[key] = rest
            else:
                del entries[key]
