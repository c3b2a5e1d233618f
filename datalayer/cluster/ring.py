"""Rendezvous (highest-random-weight) hashing: which member owns an endpoint.

Every member computes the same answer from the same member set with no
coordination, and when a member leaves only the endpoints it owned move (each
to the member with the next-highest weight), so a failure reshuffles one share,
not the fleet. blake2b rather than `hash()`: the weights must agree across
processes, and `hash()` of a str is salted per process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def weight(member: str, name: str) -> int:
    digest = hashlib.blake2b(f"{member}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(name: str, members: Iterable[str]) -> str:
    """The member with the highest weight for `name` (ties: the larger member string)."""
    return max(members, key=lambda member: (weight(member, name), member))
