"""A sharded replica group (issue 13): three real `datalayer serve` processes on static
peers, 60 mock pods in a process of their own, real gRPC between them all."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import grpc
from cluster_stack import (
    INTERVAL,
    STALENESS,
    Pods,
    Replica,
    all_fresh,
    free_port,
    group_config,
    pod_process,
    replica_group,
    write_endpoints,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_dns_discovery import Zone

from datalayer.client import DataLayerClient, EndpointMirror
from datalayer.v1 import datalayer_pb2 as pb

from stack import eventually

PODS = 60


async def owners(replica: Replica) -> dict[str, str]:
    return {e.name: e.owner for e in await replica.listing()}


async def wait_converged(
    replicas: list[Replica], timeout: float = 20.0, count: int = PODS
) -> dict[str, str]:
    """Every replica lists every pod fresh, and they all agree on one owner per pod."""
    agreed: dict[str, str] = {}

    async def converged() -> bool:
        nonlocal agreed
        if not all([await all_fresh(r, count) for r in replicas]):
            return False
        views = [await owners(r) for r in replicas]
        members = {r.target for r in replicas}
        if any(v != views[0] for v in views) or not set(views[0].values()) <= members:
            return False
        agreed = views[0]
        return True

    await eventually(converged, timeout=timeout, what="a converged group")
    return agreed


async def scrape_rates(pods: Pods, window: float) -> dict[str, float]:
    """Scrapes per poll interval of each pod over `window` seconds (1.0: collected once)."""
    before = await pods.hits()
    await asyncio.sleep(window)
    after = await pods.hits()
    polls = window / INTERVAL
    return {name: (after[name] - before[name]) / polls for name in after}


async def serving(replica: Replica) -> bool:
    try:
        async with grpc.aio.insecure_channel(replica.target) as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
    except grpc.aio.AioRpcError:
        return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def outside(rates: dict[str, float]) -> dict[str, float]:
    """Pods not scraped about once per interval: twice is double collection, none a gap.
    (A stray scraper left by another run would show here too: ports get reused.)"""
    return {name: rate for name, rate in rates.items() if not 0.6 <= rate <= 1.4}


async def test_every_replica_serves_all_and_each_pod_has_one_owner(tmp_path: Path) -> None:
    async with pod_process(PODS) as pods, replica_group(tmp_path, pods, 3) as replicas:
        agreed = await wait_converged(replicas)
        shares = Counter(agreed.values())
        assert set(shares) == {r.target for r in replicas}
        for target, share in shares.items():
            assert 15 <= share <= 25, f"{target} owns {share} of {PODS}: {shares}"
        rates = await scrape_rates(pods, 10 * INTERVAL)
        # Collected once: about one scrape per interval, never two (a pod polled by two owners).
        assert not outside(rates), outside(rates)


async def test_kill_one_replica_survivors_take_over_and_it_rejoins(tmp_path: Path) -> None:
    async with pod_process(PODS) as pods, replica_group(tmp_path, pods, 3) as replicas:
        await wait_converged(replicas)
        victim, survivors = replicas[0], replicas[1:]
        lost: list[str] = []
        watched: set[str] = set()

        async def watch_survivor() -> None:
            # A Watch on a survivor: an endpoint whose owner died must never be REMOVED.
            async with DataLayerClient(survivors[0].target) as client:
                async for response in client.watch():
                    for event in response.events:
                        if event.type == pb.WatchEvent.REMOVED:
                            lost.append(event.endpoint.name)
                        else:
                            watched.add(event.endpoint.name)

        watcher = asyncio.create_task(watch_survivor())
        try:
            await eventually(lambda: _true(len(watched) == PODS), what="the survivor's watch")
            victims = {n for n, o in (await owners(survivors[0])).items() if o == victim.target}
            assert victims
            await victim.kill()
            killed = time.monotonic()

            async def taken_over() -> bool:
                for replica in survivors:
                    endpoints = await replica.listing()
                    if len(endpoints) != PODS or any(
                        e.stale or e.owner not in {r.target for r in survivors} for e in endpoints
                    ):
                        return False
                return True

            # The bound: fresh again on the others within 2 staleness thresholds.
            await eventually(taken_over, timeout=2 * STALENESS, what="takeover by the survivors")
            takeover = time.monotonic() - killed
            shares = Counter((await owners(survivors[0])).values())
            assert sum(shares.values()) == PODS, shares
            assert len(shares) == 2, shares
            rates = await scrape_rates(pods, 10 * INTERVAL)
            assert not outside(rates), outside(rates)

            await victim.start()
            # SERVING (the readiness probe) only once its peers' shards are relayed: then
            # every endpoint it does not collect itself is there and fresh.
            await eventually(lambda: serving(victim), timeout=20, what="the victim SERVING")
            relayed = [e for e in await victim.listing() if e.owner != victim.target]
            assert relayed
            assert not any(e.stale for e in relayed), [e.name for e in relayed if e.stale]
            agreed = await wait_converged(replicas)
            back = {n for n, o in agreed.items() if o == victim.target}
            assert back == victims, "rendezvous gives the returning replica its old share"
            # Afterwards every pod is polled by one replica only: one scrape per interval.
            rates = await scrape_rates(pods, 10 * INTERVAL)
            assert not outside(rates), outside(rates)
            assert lost == [], f"the survivor's watch lost {lost}"
            print(f"takeover after kill -9: {takeover:.2f}s")
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


async def _true(value: bool) -> bool:
    return value


async def test_mirror_on_the_killed_replica_fails_over_and_loses_no_removal(
    tmp_path: Path,
) -> None:
    count = 10
    async with pod_process(count) as pods, replica_group(tmp_path, pods, 2) as replicas:
        await wait_converged(replicas, count=count)
        victim, survivor = replicas
        targets = [victim.target, survivor.target]
        async with DataLayerClient(targets) as client, client.mirror(stale_after=5) as mirror:
            await mirror.synced.wait()
            first_instance = mirror.instance_id
            assert client.target == victim.target
            assert len(mirror.endpoints) == count
            await victim.kill()
            # Removed while the mirror is between replicas: its next (full) view lacks it.
            del pods.ports["pod-0"]
            write_endpoints(tmp_path / "endpoints.yaml", pods)

            def converged(m: EndpointMirror) -> bool:
                return (
                    m.connected
                    and m.instance_id != first_instance
                    and sorted(m.endpoints) == sorted(pods.ports)
                    and not any(e.stale for e in m.endpoints.values())
                )

            await asyncio.wait_for(mirror.wait_for(converged), 4 * STALENESS)
            assert client.target == survivor.target
            # The mirror never showed its view as stale: the failover beat `stale_after`.
            assert not mirror.view_stale
            listed = await client.list_endpoints()
            assert sorted(e.name for e in listed.endpoints) == sorted(pods.ports)


async def test_members_from_dns_a_replica_added_to_the_name_joins(tmp_path: Path) -> None:
    """peersDNS against a DNS server on loopback: every address the name resolves to is a
    member; a replica whose address the answer gains takes its share."""
    loop = asyncio.get_running_loop()
    transport, zone = await loop.create_datagram_endpoint(
        lambda: Zone("peers.test"), local_addr=("127.0.0.1", 0)
    )
    dns_port = transport.get_extra_info("sockname")[1]
    count = 30
    port = free_port("127.0.0.2")
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    zone.a = hosts[:2]
    endpoints = tmp_path / "endpoints.yaml"
    replicas = []
    for host in hosts:
        cluster = {
            "self": f"{host}:{port}",
            "peersDNS": f"peers.test:{port}",
            "dnsServers": [f"127.0.0.1:{dns_port}"],
            "dnsRefresh": "200ms",
        }
        config = group_config(tmp_path, endpoints, cluster, f"dns-{host}")
        replicas.append(Replica(config, port, host=host))
    try:
        async with pod_process(count) as pods:
            write_endpoints(endpoints, pods)
            await asyncio.gather(*(r.start() for r in replicas[:2]))
            agreed = await wait_converged(replicas[:2], count=count)
            assert set(agreed.values()) == {f"{h}:{port}" for h in hosts[:2]}
            await replicas[2].start()
            zone.a = hosts  # the headless Service gained a ready pod
            agreed = await wait_converged(replicas, count=count)
            shares = Counter(agreed.values())
            assert set(shares) == {r.target for r in replicas}
            assert all(7 <= share <= 13 for share in shares.values()), shares
            rates = await scrape_rates(pods, 10 * INTERVAL)
            assert not outside(rates), outside(rates)
    finally:
        await asyncio.gather(*(r.stop() for r in replicas))
        transport.close()
