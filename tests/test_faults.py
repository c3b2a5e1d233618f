"""Each mock-pod fault mode against the running service: the broken endpoint turns stale with a
`last_error` naming the fault, the others keep fresh data, it recovers when healed, and no task
or memory leaks."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from stack import Stack, eventually, running_stack

CONFIG = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
  parameters: {{maxBodyBytes: 1048576}}
- type: core-metrics-extractor
- type: file-discovery
  parameters: {{path: {endpoints}, pollInterval: 50ms}}
dataLayer:
  interval: 50ms
  timeout: 300ms
  stalenessThreshold: 500ms
  sources:
  - pluginRef: metrics-data-source
    extractors: [{{pluginRef: core-metrics-extractor}}]
  discovery: {{pluginRef: file-discovery}}
"""

FAULTS = {
    "slow": ("slow", "poll timed out after 0.3s"),
    "http500": ("http500", "HTTP 500"),
    "garbage": ("garbage", "not a Prometheus text exposition"),
    "truncated": ("truncated", "payload is not completed"),  # aiohttp and plugins/shared/http
    "oversize": ({"mode": "oversize", "size": 2 * 1024 * 1024}, "exceeds the 1048576-byte limit"),
    "reset": ("reset", "Connection reset by peer"),
    "hang": ("hang", "poll timed out after 0.3s"),
}


def poll_tasks() -> int:
    """Tasks running a source's `poll` (the collector wraps each generic poll in one)."""
    return sum(1 for t in asyncio.all_tasks() if t.get_coro().__qualname__.endswith(".poll"))


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def all_fresh(stack: Stack) -> bool:
    listing = await stack.client.list_endpoints()
    return len(listing.endpoints) == 3 and not any(e.stale for e in listing.endpoints)


async def watch_others(stack: Stack, stop: asyncio.Event, worst_age: list[float]) -> None:
    """Sample the healthy pods' data age from the store while the fault is on."""
    while not stop.is_set():
        now = time.time()
        for name in ("pod-b", "pod-c"):
            record = stack.app.store.get(name)
            assert record is not None
            worst_age.append(now - record.metrics.update_time)
            assert not record.stale, f"{name} turned stale: {record.last_error}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault_is_contained_named_and_healed(tmp_path: Path, fault: str) -> None:
    setting, expected = FAULTS[fault]
    async with running_stack(tmp_path, CONFIG) as stack:
        await eventually(lambda: all_fresh(stack), what="all pods fresh")
        rss_before = rss_kib()
        stop = asyncio.Event()
        ages: list[float] = []
        observer = asyncio.create_task(watch_others(stack, stop, ages))

        await stack.control(0, {"fault": setting})

        async def named() -> bool:
            endpoint = await stack.client.get_endpoint("pod-a")
            return endpoint.stale and expected in endpoint.last_error

        try:
            await eventually(named, what=f"pod-a stale with {expected!r}")
        finally:
            stop.set()
            await observer
        # The healthy pods were polled every tick throughout (their interval is 50 ms).
        assert max(ages) < 0.5, f"healthy data aged to {max(ages):.3f}s during {fault}"

        await stack.control(0, {"fault": None})
        await eventually(lambda: all_fresh(stack), what="pod-a fresh again after healing")
        endpoint = await stack.client.get_endpoint("pod-a")
        assert endpoint.last_error == ""
        await asyncio.sleep(0.3)  # let cancelled client connections settle
        assert poll_tasks() <= 3  # nothing left behind by the fault: one poll per lane at most
        assert stack.app.collector.lane_count() == 3
        assert stack.app.collector.task_count() <= 3  # at most one poll in flight per lane
        assert rss_kib() - rss_before < 30 * 1024


async def test_flapping_pod_goes_stale_and_fresh_repeatedly(tmp_path: Path) -> None:
    async with running_stack(tmp_path, CONFIG) as stack:
        await eventually(lambda: all_fresh(stack), what="all pods fresh")
        states: list[bool] = []

        def record(response: object) -> None:
            for event in response.events:  # type: ignore[attr-defined]
                changed = not states or states[-1] != event.endpoint.stale
                if event.endpoint.name == "pod-a" and changed:
                    states.append(event.endpoint.stale)

        async with stack.client.mirror(names=["pod-a"], on_response=record):
            await stack.control(0, {"fault": {"mode": "flapping", "period": 0.8}})

            async def flapped() -> bool:
                return states.count(True) >= 2

            await eventually(flapped, timeout=10, what="pod-a stale twice while flapping")
            await stack.control(0, {"fault": None})
            await eventually(lambda: all_fresh(stack), what="pod-a fresh after healing")
        assert states[0] is False  # fresh before the fault
        assert False in states[1:]  # and fresh again between the flaps


async def test_bad_fault_settings_are_refused(tmp_path: Path) -> None:
    async with running_stack(tmp_path, CONFIG) as stack:
        url = f"{stack.pods[0].url}/control"
        for body, message in (
            ({"fault": "explode"}, "fault.mode: expected one of"),
            ({"fault": {"mode": "slow", "delay": -1}}, "fault.delay"),
            ({"fault": {"mode": "slow", "when": 1}}, "unknown keys when"),
        ):
            async with stack.http.post(url, json=body) as response:
                assert response.status == 400
                assert message in (await response.json())["error"]
