"""Soak: many pods at a high scrape rate, 20 Watch subscribers, a fault injected every 30 s.

    .venv/bin/python bench/soak.py --seconds 600            # the 10-minute run
    .venv/bin/python bench/soak.py --seconds 60 --pods 10   # what the test suite runs

The mock pods run in another process; the data layer and the subscribers (each a real gRPC
client with its own channel and a mirror) run here. Faults rotate through the mock pod's
modes on one pod at a time, each healed after a third of the fault period.

At the end the faults stop, the fleet heals, and the run checks, then exits non-zero when any
check fails:
- RSS drift: RSS at the end vs after warm-up (after a GC), at most 5 %;
- tasks: the same number of asyncio tasks as after warm-up;
- events: every event the hub sent was received, and every subscriber's mirror equals
  ListEndpoints (names, values and staleness).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from datalayer.client import DataLayerClient, EndpointMirror
from datalayer.config import load_config_text
from datalayer.registry import default_registry
from datalayer.v1 import datalayer_pb2 as pb
from server.app import DataLayerApp, ServeOptions
from server.runtime import run_async

from common import print_table, progress, start_mock_pods, write_json

FAULTS = ("slow", "http500", "garbage", "truncated", "reset", "hang", "flapping")

CONFIG = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
- type: core-metrics-extractor
- type: file-discovery
  parameters: {{path: {endpoints}, watchFile: false}}
dataLayer:
  interval: {interval}ms
  timeout: 500ms
  stalenessThreshold: 1s
  sources:
  - pluginRef: metrics-data-source
    extractors: [{{pluginRef: core-metrics-extractor}}]
  discovery: {{pluginRef: file-discovery}}
"""


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Subscriber:
    """A mirror on its own channel, counting what it receives."""

    def __init__(self, target: str) -> None:
        self.client = DataLayerClient(target)
        self.received = 0
        self.mirror: EndpointMirror = self.client.mirror(on_response=self._count)

    def _count(self, response: pb.WatchResponse) -> None:
        self.received += len(response.events)

    async def close(self) -> None:
        await self.mirror.stop()
        await self.client.close()


def view(endpoints: dict[str, pb.Endpoint]) -> dict[str, tuple[Any, ...]]:
    """What a scheduler acts on, per endpoint: the values and staleness."""
    return {
        name: (
            e.stale,
            e.metrics.waiting_queue_size,
            e.metrics.running_requests_size,
            round(e.metrics.kv_cache_usage_percent, 6),
            tuple(e.metrics.active_models),
        )
        for name, e in endpoints.items()
    }


async def drive(http: aiohttp.ClientSession, ports: list[int], stop: asyncio.Event) -> None:
    """Keep the pods' values moving, so every subscriber has a stream of changes to follow."""
    while not stop.is_set():
        port = random.choice(ports)
        body = {"waiting": random.randint(0, 20), "running": random.randint(0, 8)}
        async with http.post(f"http://127.0.0.1:{port}/control", json=body) as response:
            await response.read()
        await asyncio.sleep(0.01)


async def inject_faults(
    http: aiohttp.ClientSession,
    ports: list[int],
    every: float,
    stop: asyncio.Event,
    faults: Counter[str],
) -> None:
    index = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
            return
        except TimeoutError:
            pass
        mode = FAULTS[index % len(FAULTS)]
        index += 1
        port = random.choice(ports)
        progress(f"fault {mode} on pod :{port}")
        setting: Any = {"mode": mode, "period": 1.0} if mode == "flapping" else mode
        await _control(http, port, {"fault": setting})
        faults[mode] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every / 3)
        await _control(http, port, {"fault": None})


async def _control(http: aiohttp.ClientSession, port: int, body: dict[str, Any]) -> None:
    async with http.post(f"http://127.0.0.1:{port}/control", json=body) as response:
        await response.read()


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    progress(f"starting {args.pods} mock pods")
    (process,), ports = await start_mock_pods(args.pods)
    subscribers: list[Subscriber] = []
    try:
        with tempfile.TemporaryDirectory() as workdir:
            endpoints = Path(workdir) / "endpoints.yaml"
            endpoints.write_text(
                yaml.safe_dump(
                    {
                        "endpoints": [
                            {"name": f"pod-{i}", "address": "127.0.0.1", "port": p}
                            for i, p in enumerate(ports)
                        ]
                    }
                )
            )
            text = CONFIG.format(endpoints=endpoints, interval=args.interval)
            app = DataLayerApp(
                load_config_text(text, default_registry()),
                ServeOptions(grpc_host="127.0.0.1", grpc_port=0, metrics_port=None),
            )
            await app.start()
            target = f"127.0.0.1:{app.grpc_port}"
            subscribers = [Subscriber(target) for _ in range(args.subscribers)]
            for subscriber in subscribers:
                subscriber.mirror.start()
            stop = asyncio.Event()
            faults: Counter[str] = Counter()
            async with aiohttp.ClientSession() as http:
                load = asyncio.create_task(drive(http, ports, stop))
                injector = asyncio.create_task(
                    inject_faults(http, ports, args.fault_every, stop, faults)
                )
                warmup = min(10.0, args.seconds / 6)
                progress(f"warming up {warmup:.0f}s")
                await asyncio.sleep(warmup)
                gc.collect()
                rss_base, tasks_base = rss_kib(), len(asyncio.all_tasks())
                started = time.monotonic()
                samples = []
                while (elapsed := time.monotonic() - started) < args.seconds - warmup:
                    await asyncio.sleep(min(10.0, args.seconds / 6))
                    samples.append((round(elapsed), rss_kib()))
                    progress(
                        f"{elapsed:5.0f}s  RSS {rss_kib() / 1024:.1f} MiB  "
                        f"events sent {app.hub.stats.events_sent}  "
                        f"polls {app.collector.polls()}"
                    )
                stop.set()
                await asyncio.gather(load, injector)
                # Heal everything, then let every stream catch up.
                for port in ports:
                    await _control(http, port, {"fault": None})
            progress("healing and settling")
            listing = await _settle(app, subscribers)
            gc.collect()
            rss_end, tasks_end = rss_kib(), len(asyncio.all_tasks())
            sent = app.hub.stats.events_sent
            received = sum(s.received for s in subscribers)
            mismatched = sum(view(s.mirror.endpoints) != view(listing) for s in subscribers)
            errors = Counter(_error_kind(e.last_error) for e in listing.values() if e.last_error)
            polls = app.collector.polls()
            for subscriber in subscribers:
                await subscriber.close()
            await app.stop()
    finally:
        process.terminate()
        await process.wait()
    drift = (rss_end - rss_base) / rss_base * 100
    return {
        "seconds": args.seconds,
        "pods": args.pods,
        "interval_ms": args.interval,
        "subscribers": args.subscribers,
        "polls": polls,
        "faults_injected": dict(faults),
        "rss_base_mib": rss_base / 1024,
        "rss_end_mib": rss_end / 1024,
        "rss_drift_pct": drift,
        "rss_samples_kib": samples,
        "tasks_base": tasks_base,
        "tasks_end": tasks_end,
        "events_sent": sent,
        "events_received": received,
        "mirrors_differing": mismatched,
        "errors_at_end": dict(errors),
    }


async def _settle(app: DataLayerApp, subscribers: list[Subscriber]) -> dict[str, pb.Endpoint]:
    """Wait until the fleet is fresh and every mirror holds what ListEndpoints says."""
    deadline = time.monotonic() + 30
    async with DataLayerClient(f"127.0.0.1:{app.grpc_port}") as client:
        while True:
            listing = {e.name: e for e in (await client.list_endpoints()).endpoints}
            fresh = not any(e.stale for e in listing.values())
            received = sum(s.received for s in subscribers)
            same = all(view(s.mirror.endpoints) == view(listing) for s in subscribers)
            if (fresh and same and received == app.hub.stats.events_sent) or (
                time.monotonic() > deadline
            ):
                return listing
            await asyncio.sleep(0.2)


def _error_kind(text: str) -> str:
    return text.split(":", 1)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--interval", type=float, default=50, help="ms")
    parser.add_argument("--subscribers", type=int, default=20)
    parser.add_argument("--fault-every", type=float, default=30)
    parser.add_argument("--max-drift-pct", type=float, default=5.0)
    args = parser.parse_args()
    results: dict[str, Any] = {}

    async def run() -> None:
        results.update(await soak(args))

    run_async(run)
    r = results
    failures = []
    if r["rss_drift_pct"] > args.max_drift_pct:
        failures.append(f"RSS drifted {r['rss_drift_pct']:.1f} % (limit {args.max_drift_pct} %)")
    if r["tasks_end"] > r["tasks_base"]:
        failures.append(f"tasks grew from {r['tasks_base']} to {r['tasks_end']}")
    if r["events_received"] != r["events_sent"]:
        failures.append(f"events sent {r['events_sent']} but received {r['events_received']}")
    if r["mirrors_differing"]:
        failures.append(f"{r['mirrors_differing']} mirrors differ from ListEndpoints")
    print_table(
        f"soak: {r['pods']} pods @ {r['interval_ms']:g} ms, {r['subscribers']} subscribers, "
        f"{r['seconds']:g}s",
        [
            "polls",
            "faults",
            "RSS base MiB",
            "RSS end MiB",
            "drift %",
            "tasks",
            "sent",
            "received",
            "mirrors off",
        ],
        [
            [
                r["polls"],
                sum(r["faults_injected"].values()),
                r["rss_base_mib"],
                r["rss_end_mib"],
                r["rss_drift_pct"],
                f"{r['tasks_base']}->{r['tasks_end']}",
                r["events_sent"],
                r["events_received"],
                r["mirrors_differing"],
            ]
        ],
    )
    print(f"faults: {json.dumps(r['faults_injected'])}; errors at end: {r['errors_at_end']}")
    write_json("soak", {"run": r, "failures": failures})
    for failure in failures:
        print(f"FAIL: {failure}")
    print("soak: OK" if not failures else "soak: FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
