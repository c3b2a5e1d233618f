"""Unary reads: GetEndpoint and ListEndpoints throughput and latency from client processes.

    .venv/bin/python bench/unary.py
    .venv/bin/python bench/unary.py --endpoints 100 --client-processes 4 --concurrency 8

This process serves the store (`--endpoints` endpoints with typed metrics, a custom metric and
an attribute, updated 2,000 times/s by a driver, as under a scraping collector) through the
real service. Client processes each run `--concurrency` callers in a closed loop for
`--seconds`, one channel per process: at 8 callers per process the server is saturated
(throughput; latency is then mostly queueing), at 1 it is not (latency). The baseline, in the
same run and against the same server, is the gRPC health check: the transport's own floor for
a unary call here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from datalayer.hub import Hub
from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.store import EndpointStore
from datalayer.v1 import datalayer_pb2 as pb
from datalayer.v1 import datalayer_pb2_grpc as pb_grpc
from server.runtime import run_async
from server.service import DataLayerService, add_to_server

from common import percentile, print_table, progress, write_json

CALLS = ("health", "GetEndpoint", "ListEndpoints")


async def drive(store: EndpointStore, names: list[str], rate: float, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    start, done = loop.time(), 0
    while not stop.is_set():
        due = int((loop.time() - start) * rate)
        while done < due:
            update = EndpointUpdate()
            update.set_metric("waiting_queue_size", done % 17)
            update.set_metric("kv_cache_usage_percent", (done % 100) / 100)
            update.set_custom("running_sum", float(done % 5))
            store.apply(names[done % len(names)], update, time.time())
            done += 1
        await asyncio.sleep(0.001)


async def serve(args: argparse.Namespace) -> list[dict[str, Any]]:
    store = EndpointStore()
    hub = Hub(store)
    names = [f"vllm-{i}" for i in range(args.endpoints)]
    for name in names:
        store.upsert(EndpointSpec(name, "10.0.0.7", 8000, "default", {"app": "vllm"}))
        store.set_status(name, stale=False, last_error="")
        update = EndpointUpdate()
        update.set_metric("active_models", ("sql-lora",))
        update.set_metric("max_active_models", 2)
        update.set_attribute("models", ("meta-llama/Llama-3.1-8B-Instruct", "sql-lora"))
        store.apply(name, update, time.time())
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    add_to_server(DataLayerService(store, hub), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = asyncio.Event()
    driver = asyncio.create_task(drive(store, names, args.rate, stop))
    results = []
    try:
        for concurrency, call in [(c, call) for c in args.concurrency for call in args.calls]:
            progress(f"{call}: {args.client_processes} processes x {concurrency} callers")
            argv = [sys.executable, __file__, "--client", f"127.0.0.1:{port}", "--call", call]
            argv += ["--seconds", str(args.seconds), "--concurrency", str(concurrency)]
            argv += ["--endpoints", str(args.endpoints)]
            times0 = os.times()
            procs = [
                await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE)
                for _ in range(args.client_processes)
            ]
            outputs = [json.loads((await p.communicate())[0]) for p in procs]
            times1 = os.times()
            cpu = (times1.user - times0.user) + (times1.system - times0.system)
            latencies = [x for out in outputs for x in out["latencies"]]
            calls = sum(out["calls"] for out in outputs)
            elapsed = max(out["elapsed"] for out in outputs)
            results.append(
                {
                    "call": call,
                    "endpoints": args.endpoints,
                    "clients": args.client_processes * concurrency,
                    "calls_per_s": calls / elapsed,
                    "errors": sum(out["errors"] for out in outputs),
                    "p50_ms": percentile(latencies, 0.5) * 1000,
                    "p99_ms": percentile(latencies, 0.99) * 1000,
                    "server_cores": cpu / elapsed,
                    "server_us_per_call": cpu / calls * 1e6 if calls else float("nan"),
                }
            )
    finally:
        stop.set()
        await driver
        await server.stop(0)
    return results


async def client_main(args: argparse.Namespace) -> None:
    names = [f"vllm-{i}" for i in range(args.endpoints)]
    latencies: list[float] = []
    counts = {"calls": 0, "errors": 0}
    async with grpc.aio.insecure_channel(args.client) as channel:
        stub = pb_grpc.DataLayerStub(channel)
        health_stub = health_pb2_grpc.HealthStub(channel)
        await health_stub.Check(health_pb2.HealthCheckRequest())  # connected before timing
        deadline = time.monotonic() + args.seconds

        async def caller() -> None:
            rng = random.Random()
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    if args.call == "health":
                        await health_stub.Check(health_pb2.HealthCheckRequest())
                    elif args.call == "GetEndpoint":
                        await stub.GetEndpoint(pb.GetEndpointRequest(name=rng.choice(names)))
                    else:
                        await stub.ListEndpoints(pb.ListEndpointsRequest(selector="app=vllm"))
                except grpc.RpcError:
                    counts["errors"] += 1
                    continue
                latencies.append(time.perf_counter() - started)
                counts["calls"] += 1

        started = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(args.concurrency[0])))
        elapsed = time.monotonic() - started
    step = max(1, len(latencies) // 20000)
    json.dump({"latencies": latencies[::step], "elapsed": elapsed, **counts}, sys.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--calls", nargs="+", choices=CALLS, default=list(CALLS))
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[8, 1], help="callers per process"
    )
    parser.add_argument("--rate", type=float, default=2000, help="store updates per second")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--call", choices=CALLS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        run_async(lambda: client_main(args))
        return
    results: list[dict[str, Any]] = []

    async def run() -> None:
        results.extend(await serve(args))

    run_async(run)
    print_table(
        "unary: closed-loop callers in client processes (health check = transport baseline)",
        [
            "call",
            "endpoints",
            "callers",
            "calls/s",
            "errors",
            "p50 ms",
            "p99 ms",
            "cores",
            "µs/call",
        ],
        [
            [
                r["call"],
                r["endpoints"],
                r["clients"],
                r["calls_per_s"],
                r["errors"],
                r["p50_ms"],
                r["p99_ms"],
                r["server_cores"],
                r["server_us_per_call"],
            ]
            for r in results
        ],
    )
    write_json("unary", {"runs": results})


if __name__ == "__main__":
    main()
