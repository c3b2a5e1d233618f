"""A sharded replica group (issue 13): three real `datalayer serve` processes on static
peers, 60 mock pods in a process of their own, real gRPC between them all."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from cluster_stack import INTERVAL, Pods, Replica, all_fresh, pod_process, replica_group

from stack import eventually

PODS = 60


async def owners(replica: Replica) -> dict[str, str]:
    return {e.name: e.owner for e in await replica.listing()}


async def wait_converged(replicas: list[Replica], timeout: float = 20.0) -> dict[str, str]:
    """Every replica lists every pod fresh, and they all agree on one owner per pod."""
    agreed: dict[str, str] = {}

    async def converged() -> bool:
        nonlocal agreed
        if not all([await all_fresh(r, PODS) for r in replicas]):
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


async def test_every_replica_serves_all_and_each_pod_has_one_owner(tmp_path: Path) -> None:
    async with pod_process(PODS) as pods, replica_group(tmp_path, pods, 3) as replicas:
        agreed = await wait_converged(replicas)
        shares = Counter(agreed.values())
        assert set(shares) == {r.target for r in replicas}
        for target, share in shares.items():
            assert 15 <= share <= 25, f"{target} owns {share} of {PODS}: {shares}"
        rates = await scrape_rates(pods, 10 * INTERVAL)
        # Collected once: about one scrape per interval, never two (a pod polled by two owners).
        assert all(0.6 <= rate <= 1.4 for rate in rates.values()), rates
