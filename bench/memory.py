"""Memory: the data layer's RSS per endpoint at 1,000 and 10,000 scraped endpoints.

    .venv/bin/python bench/memory.py
    .venv/bin/python bench/memory.py --endpoints 0 1000 10000 --interval 10

Each (endpoint count, HTTP client) runs the whole data layer (file discovery, the
metrics source, the core-metrics extractor, store, hub, gRPC server) in a fresh child process
that scrapes real mock pods until every endpoint has been read at least once, then reports
its RSS after a GC, and again after `malloc_trim(0)` (the part of RSS that is freed memory
the allocator kept, such as the high-water mark of the start-up burst, rather than live
objects). Endpoints are distinct (address, port) pairs, so each has its own
connection as in a cluster: the mock pods listen on 0.0.0.0 and endpoints use addresses
127.0.<a>.<b> (all loopback on Linux). The 0-endpoint run in the same run is the baseline;
the figure to quote is the RSS added per endpoint between 1,000 and 10,000.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import yaml

from datalayer.config import load_config_text
from datalayer.registry import default_registry
from server.app import DataLayerApp, ServeOptions
from server.runtime import run_async

from common import print_table, progress, rss_kib, start_mock_pods, write_json

CONFIG = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
  parameters: {{httpClient: {http_client}}}
- type: core-metrics-extractor
- type: file-discovery
  parameters: {{path: {endpoints}, watchFile: false}}
dataLayer:
  interval: {interval}s
  timeout: 5s
  stalenessThreshold: 60s
  sources:
  - pluginRef: metrics-data-source
    extractors: [{{pluginRef: core-metrics-extractor}}]
  discovery: {{pluginRef: file-discovery}}
"""
CLIENTS = {"httptools": "auto", "aiohttp": "aiohttp"}


def addresses(count: int, ports: list[int]) -> list[tuple[str, int]]:
    """`count` distinct loopback (address, port) pairs."""
    out = []
    for i in range(count):
        host, port = divmod(i, len(ports))
        out.append((f"127.0.{1 + host // 250}.{1 + host % 250}", ports[port]))
    return out


async def child(args: argparse.Namespace) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ports = [int(p) for p in args.ports.split(",")]
    with tempfile.TemporaryDirectory() as workdir:
        endpoints = Path(workdir) / "endpoints.yaml"
        endpoints.write_text(
            yaml.safe_dump(
                {
                    "endpoints": [
                        {"name": f"pod-{i}", "address": host, "port": port}
                        for i, (host, port) in enumerate(addresses(args.child, ports))
                    ]
                }
            )
        )
        config = load_config_text(
            CONFIG.format(
                endpoints=endpoints, interval=args.interval, http_client=CLIENTS[args.client]
            ),
            default_registry(),
        )
        app = DataLayerApp(
            config, ServeOptions(grpc_host="127.0.0.1", grpc_port=0, metrics_port=None)
        )
        await app.start()
        try:
            deadline = time.monotonic() + args.interval * 3 + 30
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                fresh = sum(1 for r in app.store if not r.stale)
                if len(app.store) == args.child and fresh == args.child:
                    break
            await asyncio.sleep(args.settle)
            gc.collect()
            fresh = sum(1 for r in app.store if not r.stale)
            result = {
                "endpoints": args.child,
                "client": args.client,
                "fresh": fresh,
                "polls": app.collector.polls(),
                "rss_kib": rss_kib(),
                # What the allocator can give back: the rest is live objects (or arenas
                # pinned by a few of them), not the start-up burst's high-water mark.
                "rss_trimmed_kib": _trimmed_rss_kib(),
            }
            if args.profile:
                _profile(args.profile)
        finally:
            await app.stop()
    json.dump(result, sys.stdout)


def _trimmed_rss_kib() -> int:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_kib()


def _profile(top: int) -> None:
    """The `top` allocation sites alive now (tracemalloc, started at the child's start)."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    stats = snapshot.statistics("lineno")
    total = sum(s.size for s in stats)
    print(f"tracemalloc: {total / 1024:,.0f} KiB live in {len(stats)} sites", file=sys.stderr)
    for stat in stats[:top]:
        frame = stat.traceback[0]
        where = f"{frame.filename}:{frame.lineno}"
        print(f"{stat.size / 1024:10,.1f} KiB {stat.count:8,d} blocks  {where}", file=sys.stderr)


async def parent(args: argparse.Namespace) -> list[dict[str, Any]]:
    progress(f"starting {args.pods} mock pods on 0.0.0.0")
    procs, ports = await start_mock_pods(args.pods, args.pod_processes, host="0.0.0.0")
    results = []
    try:
        for client in args.clients:
            for count in args.endpoints:
                progress(f"{count} endpoints, {client}, interval {args.interval:g}s")
                argv = [sys.executable, __file__, "--child", str(count), "--client", client]
                argv += ["--ports", ",".join(map(str, ports)), "--interval", str(args.interval)]
                argv += ["--settle", str(args.settle)]
                if args.profile:
                    argv += ["--profile", str(args.profile)]
                child = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE)
                out, _ = await child.communicate()
                results.append(json.loads(out))
    finally:
        for process in procs:
            process.terminate()
        for process in procs:
            await process.wait()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoints", type=int, nargs="+", default=[0, 1000, 10000])
    parser.add_argument("--clients", nargs="+", choices=list(CLIENTS), default=list(CLIENTS))
    parser.add_argument("--interval", type=float, default=10, help="seconds between scrapes")
    parser.add_argument("--settle", type=float, default=2)
    parser.add_argument("--pods", type=int, default=50, help="mock pods (ports)")
    parser.add_argument("--pod-processes", type=int, default=2)
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="print the N largest live allocation sites of each run (tracemalloc; slower)",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client", default="httptools", help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        if args.profile:
            tracemalloc.start()
        run_async(lambda: child(args))
        return
    results: list[dict[str, Any]] = []

    async def run() -> None:
        results.extend(await parent(args))

    run_async(run)
    rows = []
    for r in results:
        base = next(
            (b for b in results if b["client"] == r["client"] and b["endpoints"] == 0), None
        )
        smaller = [
            b for b in results if b["client"] == r["client"] and 0 < b["endpoints"] < r["endpoints"]
        ]
        per = (r["rss_kib"] - base["rss_kib"]) / r["endpoints"] if base and r["endpoints"] else None
        prev = max(smaller, key=lambda b: b["endpoints"]) if smaller else None
        marginal = (
            (r["rss_kib"] - prev["rss_kib"]) / (r["endpoints"] - prev["endpoints"])
            if prev
            else None
        )
        trimmed = (
            (r["rss_trimmed_kib"] - prev["rss_trimmed_kib"]) / (r["endpoints"] - prev["endpoints"])
            if prev
            else None
        )
        r["kib_per_endpoint"] = per
        r["kib_per_additional_endpoint"] = marginal
        r["kib_per_additional_endpoint_trimmed"] = trimmed
        rows.append(
            [
                r["client"],
                r["endpoints"],
                r["fresh"],
                r["rss_kib"] / 1024,
                "-" if per is None else per,
                "-" if marginal is None else marginal,
                r["rss_trimmed_kib"] / 1024,
                "-" if trimmed is None else trimmed,
            ]
        )
    print_table(
        "memory: data-layer RSS with N scraped endpoints (0 endpoints = baseline; trimmed = "
        "after malloc_trim(0), what the allocator could hand back)",
        [
            "client",
            "endpoints",
            "fresh",
            "RSS MiB",
            "KiB/endpoint",
            "KiB/additional endpoint",
            "trimmed RSS MiB",
            "trimmed KiB/additional",
        ],
        rows,
    )
    write_json("memory", {"runs": results})


if __name__ == "__main__":
    main()
