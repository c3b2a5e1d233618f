"""Watch fan-out: S subscribers in other processes, U endpoint updates/s committed here.

    .venv/bin/python bench/fanout.py                       # S = 10 and 50, 2,000 updates/s
    .venv/bin/python bench/fanout.py --subscribers 50 --rate 2000 --seconds 15

This process runs the store, the hub and the gRPC service (no collector: a driver commits
`--rate` updates/s round-robin over `--endpoints` endpoints, each stamping the commit time in
`metrics.update_time`). Subscriber processes each hold a share of the Watch streams (one
channel per stream, as separate schedulers would) and time every event from commit to
receipt. Each configuration runs twice in this one run: with the current serving path
(batches serialized once per filter and shared) and with the baseline (every stream builds
and serializes its own messages, and the hub evaluates every subscriber separately), so the
ratio is what to quote.

Reports commit→receipt p50/p99, the server's CPU (cores, and µs per committed update), the
responses built vs. reused, and the updates coalesced for streams that were behind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import grpc

from datalayer.hub import Hub
from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.store import EndpointStore
from datalayer.v1 import datalayer_pb2 as pb
from datalayer.v1 import datalayer_pb2_grpc as pb_grpc
from server.convert import batch_to_proto
from server.runtime import run_async
from server.service import DataLayerService, add_to_server

from common import percentile, print_table, progress, write_json

FILTERS = ["app=vllm", "app in (vllm)", "app!=sglang", "app", "!legacy"]


# --- the baseline: what the serving path did before serialize-once ----------------------------


class BaselineService(DataLayerService):
    """Every stream converts and serializes its own batches (registered with the generated
    code, so gRPC serializes each message per stream)."""

    def __init__(self, store: EndpointStore, hub: Hub) -> None:
        super().__init__(store, hub)
        instance_id = store.instance_id

        class _PerStream:
            def encode(self, batch: Any, parts: frozenset[str] = frozenset()) -> list[Any]:
                # (The service iterates over what its encoder gives: one message per batch.)
                return [batch_to_proto(batch, instance_id, parts)]

        self.encoder = _PerStream()  # type: ignore[assignment]


def baseline_flush(hub: Hub) -> None:
    """The hub's flush before filters were grouped: every subscriber evaluates every name."""
    hub._flush_handle = None
    dirty, hub._dirty = hub._dirty, {}
    for subscriber in hub.subscribers:
        woke = False
        for name, parts in dirty.items():
            if subscriber.interested(name, parts):
                subscriber.mark(name)
                woke = True
        if woke:
            subscriber.wake.set()


# --- server side -------------------------------------------------------------------------------


async def drive(store: EndpointStore, names: list[str], rate: float, stop: asyncio.Event) -> int:
    """Commit `rate` changed updates per second, round-robin over `names`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    done = 0
    while not stop.is_set():
        due = int((loop.time() - start) * rate)
        while done < due:
            update = EndpointUpdate()
            update.set_metric("waiting_queue_size", done)
            update.set_metric("kv_cache_usage_percent", (done % 100) / 100)
            store.apply(names[done % len(names)], update, time.time())
            done += 1
        await asyncio.sleep(0.001)
    return done


async def serve_once(args: argparse.Namespace, subscribers: int, mode: str) -> dict[str, Any]:
    store = EndpointStore()
    hub = Hub(store, max_subscribers=subscribers + 10)
    if mode == "baseline":
        hub.flush = lambda: baseline_flush(hub)  # type: ignore[method-assign]
    names = [f"pod-{i}" for i in range(args.endpoints)]
    for name in names:
        store.upsert(EndpointSpec(name, "10.0.0.1", 8000, "default", {"app": "vllm", "pool": "a"}))
        store.set_status(name, stale=False, last_error="")
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    if mode == "baseline":
        service: DataLayerService = BaselineService(store, hub)
        pb_grpc.add_DataLayerServicer_to_server(service, server)
    else:
        service = DataLayerService(store, hub)
        add_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    procs = []
    per = -(-subscribers // args.client_processes)
    for first in range(0, subscribers, per):
        count = min(per, subscribers - first)
        filters = [FILTERS[(first + i) % args.filters] for i in range(count)]
        argv = [sys.executable, __file__, "--client", f"127.0.0.1:{port}"]
        argv += ["--seconds", str(args.warmup + args.seconds + 1), "--filters-list", *filters]
        argv += ["--skip", str(args.warmup)]
        procs.append(await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE))
    try:
        deadline = time.monotonic() + 30
        while len(hub.subscribers) < subscribers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(hub.subscribers)} subscribers connected")
            await asyncio.sleep(0.05)
        stop = asyncio.Event()
        driver = asyncio.create_task(drive(store, names, args.rate, stop))
        await asyncio.sleep(args.warmup)
        stats0 = (hub.stats.events_sent, hub.stats.coalesced, hub.stats.batches_sent)
        rev0, times0, t0 = store.revision, os.times(), time.monotonic()
        built0 = getattr(service.encoder, "built", 0)
        reused0 = getattr(service.encoder, "reused", 0)
        await asyncio.sleep(args.seconds)
        times1, elapsed = os.times(), time.monotonic() - t0
        commits = store.revision - rev0
        events = hub.stats.events_sent - stats0[0]
        coalesced = hub.stats.coalesced - stats0[1]
        batches = hub.stats.batches_sent - stats0[2]
        built = getattr(service.encoder, "built", 0) - built0
        reused = getattr(service.encoder, "reused", 0) - reused0
        # Keep committing until the subscribers have left on their own deadline.
        outputs = [json.loads((await p.communicate())[0]) for p in procs]
        stop.set()
        await driver
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        hub.close()
        await server.stop(0)
    latencies = [x for out in outputs for x in out["latencies"]]
    cpu = (times1.user - times0.user) + (times1.system - times0.system)
    return {
        "mode": mode,
        "subscribers": subscribers,
        "filters": min(args.filters, subscribers),
        "rate": args.rate,
        "commits_per_s": commits / elapsed,
        "events_received": sum(out["events"] for out in outputs),
        "events_sent_per_s": events / elapsed,
        "messages_per_s": batches / elapsed,
        "coalesced_per_s": coalesced / elapsed,
        "responses_built_per_s": built / elapsed,
        "responses_reused_per_s": reused / elapsed,
        "latency_p50_ms": percentile(latencies, 0.5) * 1000,
        "latency_p99_ms": percentile(latencies, 0.99) * 1000,
        "latency_max_ms": max(latencies, default=float("nan")) * 1000,
        "server_cores": cpu / elapsed,
        "server_us_per_update": cpu / commits * 1e6 if commits else float("nan"),
    }


# --- subscriber processes ----------------------------------------------------------------------


async def subscribe(
    target: str, selector: str, seconds: float, skip: float
) -> tuple[list[float], int]:
    latencies: list[float] = []
    events = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DataLayerStub(channel)
        call = stub.Watch(pb.Subscription(selector=selector, attributes=["metrics"]))
        start = time.monotonic()
        synced = False
        try:
            async with asyncio.timeout(seconds):
                async for response in call:
                    now = time.time()
                    if not synced:
                        synced = response.synced
                        continue
                    measuring = time.monotonic() - start > skip
                    for event in response.events:
                        stamp = event.endpoint.metrics.update_time
                        if measuring and event.type == pb.WatchEvent.UPDATED:
                            events += 1
                            latencies.append(now - (stamp.seconds + stamp.nanos / 1e9))
        except TimeoutError:
            pass
        finally:
            call.cancel()
    return latencies, events


async def client_main(args: argparse.Namespace) -> None:
    results = await asyncio.gather(
        *(subscribe(args.client, f, args.seconds, args.skip) for f in args.filters_list)
    )
    latencies = [x for lat, _ in results for x in lat]
    # Enough samples for a p99 without shipping every event through a pipe.
    step = max(1, len(latencies) // 20000)
    json.dump({"latencies": latencies[::step], "events": sum(n for _, n in results)}, sys.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--rate", type=float, default=2000, help="endpoint updates per second")
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--filters", type=int, default=1, choices=range(1, len(FILTERS) + 1))
    parser.add_argument("--modes", nargs="+", default=["shared", "baseline"])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--client-processes", type=int, default=5)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--filters-list", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--skip", type=float, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        run_async(lambda: client_main(args))
        return
    results: list[dict[str, Any]] = []

    async def all_runs() -> None:
        for subscribers in args.subscribers:
            for mode in args.modes:
                progress(f"{subscribers} subscribers, {args.rate:g} updates/s, {mode}")
                results.append(await serve_once(args, subscribers, mode))

    run_async(all_runs)
    print_table(
        "fan-out: commit → receipt, serialize once per filter (shared) vs per stream (baseline)",
        [
            "subscribers",
            "filters",
            "mode",
            "commits/s",
            "msgs/s",
            "events/s",
            "coalesced/s",
            "built/s",
            "reused/s",
            "p50 ms",
            "p99 ms",
            "server cores",
            "µs/update",
        ],
        [
            [
                r["subscribers"],
                r["filters"],
                r["mode"],
                r["commits_per_s"],
                r["messages_per_s"],
                r["events_sent_per_s"],
                r["coalesced_per_s"],
                r["responses_built_per_s"],
                r["responses_reused_per_s"],
                r["latency_p50_ms"],
                r["latency_p99_ms"],
                r["server_cores"],
                r["server_us_per_update"],
            ]
            for r in results
        ],
    )
    write_json("fanout", {"runs": results})


if __name__ == "__main__":
    main()
