"""Which member owns an endpoint: rendezvous hashing with bounded loads.

Plain rendezvous (highest-random-weight) hashing needs no coordination and moves
only a departed member's share, but its shares vary like coin flips: 60 endpoints
over 3 members land 28/21/11 often enough. So each member takes at most
`ceil(n / members * (1 + slack))` endpoints: in a fixed pseudo-random order of the
names, each goes to the highest-weight member that still has room. The answer is a
pure function of the names and the members, so every replica computes the same
one; a departure still moves mostly the departed member's share (the others keep
their top choices, and their caps grow), and a return restores the old split.
blake2b rather than `hash()`: weights must agree across processes.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Collection, Iterable

#: How far above the mean share a member may go: with 0.1 every share is within
#: roughly -20 % .. +10 % of the mean.
SLACK = 0.1


def weight(member: str, name: str) -> int:
    digest = hashlib.blake2b(f"{member}\0{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def ranked(name: str, members: Iterable[str]) -> list[str]:
    """Members in the order `name` prefers them (highest weight first)."""
    return sorted(members, key=lambda member: (weight(member, name), member), reverse=True)


def capacity(count: int, members: int, slack: float = SLACK) -> int:
    return max(1, math.ceil(count / max(members, 1) * (1 + slack)))


def assign(
    names: Collection[str], members: Collection[str], slack: float = SLACK
) -> dict[str, str]:
    """Every name's owner: its highest-weight member that has room under the cap."""
    cap = capacity(len(names), len(members), slack)
    load: Counter[str] = Counter()
    owners: dict[str, str] = {}
    for name in sorted(names, key=lambda n: (weight("", n), n)):
        for member in ranked(name, members):
            if load[member] < cap:
                owners[name] = member
                load[member] += 1
                break
    return owners


def place(name: str, members: Collection[str]) -> str:
    """An owner for one new name before the next `assign`: its first choice, which the
    canonical assignment also gives it unless that member is full (a few in ten), so a
    fleet discovered name by name settles with few handoffs."""
    return ranked(name, members)[0]
