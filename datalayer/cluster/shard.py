"""The gate between discovery and the collector in a sharded replica group.

Every replica runs the same discovery, so each sees every endpoint; the gate
sends to the local collector only what this replica owns (rendezvous hashing
over the live members), and writes the rest into the store from the owners'
own-shard Watch streams, as local commits. A replica therefore serves every
endpoint, and its clients see an endpoint's owner change as an `owner` field
change, never as a removal: only this replica's own discovery removes
endpoints from its store.

Handoffs are make-before-break. Gaining an endpoint (its owner left), the
replica starts collecting at once. Losing one (a member joined or came back),
it keeps collecting until the new owner's stream shows the endpoint fresh,
then stops and relays the owner's state: no gap, and double collection only
for the new owner's first poll. A replica applies a peer's state only for
endpoints it does not collect itself, so the overlap never mixes two sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import grpc

from datalayer.cluster.members import MemberSource
from datalayer.cluster.peer import PeerLink
from datalayer.cluster.remote import attributes_from_proto, metrics_from_proto
from datalayer.cluster.ring import assign, place
from datalayer.cluster.settings import ClusterSettings
from datalayer.collector import Collector, spec_problem
from datalayer.model import EndpointSpec, Metrics
from datalayer.store import EndpointStore
from datalayer.v1 import datalayer_pb2 as pb

log = logging.getLogger("datalayer.cluster")


class ShardGroup:
    """This replica's part of a sharded group; `start` and `close` own every task."""

    def __init__(
        self,
        settings: ClusterSettings,
        me: str,
        store: EndpointStore,
        grace: float,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.settings = settings
        self.me = me
        self.store = store
        self.grace = grace
        self.token = token
        #: How links reach peers over TLS (the server's own certificate as the client's, its
        #: client CA as the roots); None: plaintext.
        self.credentials = credentials
        self.source = MemberSource(settings, me)
        self.collector: Collector | None = None
        #: Live members, this replica included; ownership is computed over these.
        self.members: frozenset[str] = frozenset({me})
        self.links: dict[str, PeerLink] = {}
        #: Every endpoint discovery reported (owned or not).
        self.specs: dict[str, EndpointSpec] = {}
        #: name -> peer -> the latest state that peer reported for it (its own shard).
        self.views: dict[str, dict[str, pb.Endpoint]] = {}
        #: Per peer, names of a new stream's snapshot not yet confirmed by it.
        self._unconfirmed: dict[str, set[str]] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Membership changes seen (for status and tests).
        self.changes = 0
        #: Set once every live peer has delivered its whole shard (or left): from then on
        #: this replica holds the whole view, and reports SERVING.
        self.relayed = asyncio.Event()
        #: Every known name's owner among the current members (see ring.assign).
        self._owners: dict[str, str] = {}
        #: Names came or went since the last full assignment.
        self._reassign = False

    # --- lifecycle ---

    def attach(self, collector: Collector) -> None:
        """Route `collector`'s discovery through this gate (at start and after a reload)."""
        self.collector = collector
        collector.route_discovery(self)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cluster membership")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        links, self.links = list(self.links.values()), {}
        await asyncio.gather(*(link.close() for link in links))

    def owner_of(self, name: str) -> str:
        found = self._owners.get(name)
        if found is None:
            # A new name between two full assignments: placed now, settled by the next.
            found = place(name, self.members)
            self._owners[name] = found
            self._reassign = True
        return found

    def _assign(self) -> bool:
        """The canonical assignment of every known name; True if any owner changed."""
        owners = assign(self.specs.keys(), self.members)
        changed = owners != self._owners
        self._owners = owners
        self._reassign = False
        return changed

    def owned(self) -> list[str]:
        """Names this replica collects now."""
        collector = self.collector
        return [n for n in self.specs if collector is not None and collector.collects(n)]

    def describe(self) -> dict[str, object]:
        """For /status.json: this member, the live members, each peer's link, the shares."""
        now = asyncio.get_running_loop().time()
        shares: dict[str, int] = {}
        for name in self.specs:
            member = self.owner_of(name)
            shares[member] = shares.get(member, 0) + 1
        return {
            "self": self.me,
            "members": sorted(self.members),
            "collecting": len(self.owned()),
            "shares": shares,
            "membership_changes": self.changes,
            "peers": [
                {
                    "address": address,
                    "up": link.up,
                    "alive": link.alive(now),
                    "down_for": None if link.down_since is None else now - link.down_since,
                    "responses": link.responses,
                }
                for address, link in sorted(self.links.items())
            ],
        }

    # --- discovery target (called through the collector's discovery sinks) ---

    async def upsert(self, spec: EndpointSpec) -> None:
        async with self._lock:
            collector = self._collector()
            if collector.collects(spec.name) or self.owner_of(spec.name) == self.me:
                await self._collect(spec)
                return
            problem = spec_problem(spec)
            if problem:
                log.warning("endpoint %.253s refused: %s", spec.name, problem)
                return
            self.specs[spec.name] = spec
            self.store.upsert(spec)
            self._apply_best(spec.name)

    async def delete(self, name: str) -> None:
        async with self._lock:
            self.specs.pop(name, None)
            self.views.pop(name, None)
            if self._owners.pop(name, None) is not None:
                self._reassign = True
            collector = self._collector()
            if collector.collects(name):
                await collector.delete(name)
            else:
                self.store.remove(name)

    async def replace_all(self, specs: Sequence[EndpointSpec]) -> None:
        wanted = {spec.name for spec in specs}
        for name in [n for n in self.specs if n not in wanted]:
            await self.delete(name)
        for spec in specs:
            await self.upsert(spec)

    # --- peers' streams ---

    async def _on_response(self, peer: str, response: pb.WatchResponse, first: bool) -> None:
        async with self._lock:
            if first:
                self._unconfirmed[peer] = {n for n, v in self.views.items() if peer in v}
            unconfirmed = self._unconfirmed.get(peer)
            for event in response.events:
                name = event.endpoint.name
                if event.type == pb.WatchEvent.REMOVED:
                    self.views.get(name, {}).pop(peer, None)
                else:
                    self.views.setdefault(name, {})[peer] = event.endpoint
                if unconfirmed is not None:
                    unconfirmed.discard(name)
                await self._settle(name)
            if response.synced and unconfirmed is not None:
                # The new stream's snapshot is complete: what it lacks, the peer no longer owns.
                del self._unconfirmed[peer]
                for name in unconfirmed:
                    self.views.get(name, {}).pop(peer, None)
                    await self._settle(name)

    async def _settle(self, name: str) -> None:
        """After `name`'s views changed: finish a pending handoff, or relay the best view."""
        spec = self.specs.get(name)
        if spec is None:
            return
        collector = self._collector()
        if collector.collects(name):
            target = self.owner_of(name)
            view = self.views.get(name, {}).get(target)
            if target != self.me and view is not None and not view.stale:
                await collector.release(name)
                log.debug("endpoint %s handed over to %s", name, target)
                self._apply_best(name)
            return
        self._apply_best(name)

    def _apply_best(self, name: str) -> bool:
        """Write the owner's view of `name` (or any peer's) into the store; False if none."""
        views = self.views.get(name)
        if not views:
            return False
        view = views.get(self.owner_of(name)) or next(iter(views.values()))
        self.store.put_remote(
            name,
            metrics_from_proto(view.metrics),
            attributes_from_proto(view),
            view.stale,
            view.last_error,
            view.owner,
        )
        return True

    # --- membership ---

    async def _run(self) -> None:
        """Keep links to the members, judge their liveness, reconcile on every change."""
        period = max(self.grace / 4, 0.05)
        while True:
            await self._refresh_links()
            now = asyncio.get_running_loop().time()
            alive = {self.me} | {a for a, link in self.links.items() if link.alive(now)}
            if alive != self.members:
                async with self._lock:
                    await self._change_members(frozenset(alive))
            elif self._reassign:
                async with self._lock:
                    if self._assign():
                        await self._reconcile()
            if not self.relayed.is_set() and all(
                link.synced_once or not link.alive(now) for link in self.links.values()
            ):
                self.relayed.set()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), period)

    async def _refresh_links(self) -> None:
        addresses = await self.source.current()
        startup = 2 * self.grace
        for address in sorted(addresses - {self.me} - self.links.keys()):
            link = PeerLink(
                address,
                self._on_response,
                self._wake.set,
                self.grace,
                startup,
                self.token,
                credentials=self.credentials,
            )
            self.links[address] = link
            link.start()
        for address in [a for a in self.links if a not in addresses]:
            await self.links.pop(address).close()

    async def _change_members(self, alive: frozenset[str]) -> None:
        left = self.members - alive
        joined = alive - self.members
        self.members = alive
        self._assign()
        self.changes += 1
        log.info(
            "members: %s (joined: %s, left: %s)",
            ", ".join(sorted(alive)),
            ", ".join(sorted(joined)) or "-",
            ", ".join(sorted(left)) or "-",
            extra={"members": sorted(alive)},
        )
        orphans: list[str] = []
        for peer in left:
            self._unconfirmed.pop(peer, None)
            for name, views in self.views.items():
                if views.pop(peer, None) is not None:
                    orphans.append(name)
        await self._reconcile()
        collector = self._collector()
        for name in orphans:
            if name in self.specs and not collector.collects(name) and not self._apply_best(name):
                # Its data is as old as the grace: unknown now, until the new owner reports.
                record = self.store.get(name)
                self.store.put_remote(
                    name,
                    Metrics(),
                    {},
                    True,
                    f"owner replica {record.owner if record else '?'} left the group; "
                    f"waiting for {self.owner_of(name)}",
                    "",
                )

    async def _reconcile(self) -> None:
        """Collect every endpoint this replica owns; hand over those another owns now."""
        for name, spec in list(self.specs.items()):
            if self.owner_of(name) == self.me:
                if not self._collector().collects(name):
                    await self._collect(spec)
            else:
                await self._settle(name)

    async def _collect(self, spec: EndpointSpec) -> None:
        collector = self._collector()
        await collector.upsert(spec)
        if self.store.get(spec.name) is None:
            self.specs.pop(spec.name, None)  # refused by the collector (a cap)
            return
        self.specs[spec.name] = spec
        self.store.set_owner(spec.name, self.me)

    def _collector(self) -> Collector:
        if self.collector is None:
            raise RuntimeError("ShardGroup.attach was not called")
        return self.collector
