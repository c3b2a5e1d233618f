"""Which discovery reports which endpoint, when several feed one collector.

A DNS name for the vLLM pool and a file for the rest can feed one store: each
discovery gets its own `ScopedSink`, which removes only what that discovery
itself reported, so one discovery's empty answer never deletes another's
endpoints. After a reload, endpoints that no discovery claims any more are
pruned once every discovery has reported its first set.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from datalayer.model import EndpointSpec


class EndpointTarget(Protocol):
    """What the sinks drive: the collector's own discovery-sink methods."""

    async def upsert(self, spec: EndpointSpec) -> None: ...

    async def delete(self, name: str) -> None: ...


class Membership:
    """The owners of every endpoint, and whether every expected discovery has synced."""

    def __init__(
        self, target: EndpointTarget, on_all_synced: Callable[[set[str]], Awaitable[None] | None]
    ) -> None:
        self.target = target
        self._on_all_synced = on_all_synced
        #: endpoint name -> the discoveries reporting it
        self.owners: dict[str, set[str]] = {}
        self._expected: set[str] = set()
        self._synced: set[str] = set()
        self._done = False

    def sink(self, owner: str) -> ScopedSink:
        self._expected.add(owner)
        return ScopedSink(self, owner)

    def claim(self, name: str, owner: str) -> None:
        self.owners.setdefault(name, set()).add(owner)

    def release(self, name: str, owner: str) -> bool:
        """Drop `owner`'s claim; True when no discovery reports `name` any more."""
        owners = self.owners.get(name)
        if owners is None:
            return True
        owners.discard(owner)
        if owners:
            return False
        del self.owners[name]
        return True

    def synced(self, owner: str) -> None:
        self._synced.add(owner)
        if self._done or self._synced < self._expected:
            return
        self._done = True
        self._on_all_synced(set(self.owners))


class ScopedSink:
    """One discovery's view of the collector (a `DiscoverySink`)."""

    def __init__(self, membership: Membership, owner: str) -> None:
        self._membership = membership
        self.owner = owner
        self.owned: set[str] = set()

    async def upsert(self, spec: EndpointSpec) -> None:
        self.owned.add(spec.name)
        self._membership.claim(spec.name, self.owner)
        await self._membership.target.upsert(spec)

    async def delete(self, name: str) -> None:
        self.owned.discard(name)
        if self._membership.release(name, self.owner):
            await self._membership.target.delete(name)

    async def replace_all(self, specs: Sequence[EndpointSpec]) -> None:
        wanted = {spec.name for spec in specs}
        for name in sorted(self.owned - wanted):
            await self.delete(name)
        for spec in specs:
            await self.upsert(spec)

    def mark_synced(self) -> None:
        self._membership.synced(self.owner)
