"""The collector under load: N mock pods in another process, scraped at a given interval.

    .venv/bin/python bench/collector.py                      # 100 pods @ 50 ms, 500 @ 250 ms
    .venv/bin/python bench/collector.py --pods 100 --interval 50 --seconds 20

Each configuration runs with the httptools client, with aiohttp, and with the floor (a bare
uvloop keep-alive client that fetches the same pages at the same rate and parses nothing: the
`x floor` column is each client's CPU per scrape over the floor's) against the same pods, in this
one run, on pages that stay the same between scrapes ("static": most
scrapes commit nothing) and on pages whose gauges change on every request ("churn", the mock
pod's `--churn`: every scrape commits and publishes).

Reports achieved scrapes/s against the nominal rate, the data layer's CPU per scrape (this
process's CPU time / completed scrapes: HTTP, scan, extract, commit, publish), the data age
at read time (sampled from the store every 100 ms), and RSS. The pods run in separate
processes (on uvloop) so their CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from datalayer.config import load_config_text
from datalayer.registry import default_registry
from server.app import DataLayerApp, ServeOptions
from server.runtime import run_async

from common import percentile, print_table, progress, rss_kib, start_mock_pods, write_json

CONFIG = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
  parameters: {{httpClient: {http_client}}}
- type: core-metrics-extractor
- type: file-discovery
  parameters: {{path: {endpoints}, watchFile: false}}
dataLayer:
  interval: {interval}ms
  sources:
  - pluginRef: metrics-data-source
    extractors: [{{pluginRef: core-metrics-extractor}}]
  discovery: {{pluginRef: file-discovery}}
"""

CLIENTS = {"httptools": "auto", "aiohttp": "aiohttp", "floor": ""}


class _BareGet(asyncio.Protocol):
    """The floor: a keep-alive GET that only finds where the reply ends (Content-Length) and
    parses nothing else: no HTTP parser, no scan, no store, no collector."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.need = -1
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.need < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"content-length:") + 15
            self.need = end + 4 + int(head[at : head.find(b"\r\n", at)])
        if len(self.buffer) >= self.need and self.waiter is not None:
            self.buffer.clear()
            self.need = -1
            self.waiter.set_result(None)

    def get(self, request: bytes) -> asyncio.Future[None]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter


async def measure_floor(
    ports: list[int], interval_ms: float, seconds: float, warmup: float
) -> dict[str, Any]:
    """The same pods at the same rate through `_BareGet`: what fetching alone costs."""
    loop = asyncio.get_running_loop()
    interval = interval_ms / 1000
    counts = [0]

    async def one(port: int) -> None:
        _, protocol = await loop.create_connection(_BareGet, "127.0.0.1", port)
        request = f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        await asyncio.sleep(random.uniform(0, interval))
        next_tick = loop.time()
        while True:
            await protocol.get(request)
            counts[0] += 1
            next_tick = max(next_tick + interval, loop.time())
            await asyncio.sleep(next_tick - loop.time())

    tasks = [asyncio.create_task(one(port)) for port in ports]
    try:
        await asyncio.sleep(warmup)
        polls0, t0, times0 = counts[0], time.monotonic(), os.times()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        polls = counts[0] - polls0
        times1 = os.times()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    user, system = times1.user - times0.user, times1.system - times0.system
    nominal = len(ports) / interval
    nan = float("nan")
    return {
        "client": "floor",
        "pods": len(ports),
        "interval_ms": interval_ms,
        "nominal_per_s": nominal,
        "achieved_per_s": polls / elapsed,
        "achieved_pct": 100 * polls / elapsed / nominal,
        "cpu_us_per_scrape": (user + system) / polls * 1e6,
        "cpu_cores": (user + system) / elapsed,
        "user_us_per_scrape": user / polls * 1e6,
        "sys_us_per_scrape": system / polls * 1e6,
        "commits_per_s": nan,
        "poll_errors": 0,
        "age_p50_ms": nan,
        "age_p99_ms": nan,
        "age_mean_ms": nan,
        "stale_at_end": 0,
        "rss_mib": rss_kib() / 1024,
    }


async def measure(
    ports: list[int], interval_ms: float, client: str, seconds: float, warmup: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as workdir:
        endpoints = Path(workdir) / "endpoints.yaml"
        endpoints.write_text(
            yaml.safe_dump(
                {
                    "endpoints": [
                        {"name": f"pod-{i}", "address": "127.0.0.1", "port": port}
                        for i, port in enumerate(ports)
                    ]
                }
            )
        )
        text = CONFIG.format(endpoints=endpoints, interval=interval_ms, http_client=CLIENTS[client])
        config = load_config_text(text, default_registry())
        app = DataLayerApp(
            config, ServeOptions(grpc_host="127.0.0.1", grpc_port=0, metrics_port=None)
        )
        await app.start()
        try:
            await asyncio.sleep(warmup)
            polls0, t0 = app.collector.polls(), time.monotonic()
            times0 = os.times()
            rev0, errors0 = app.store.revision, app.metrics_errors()
            ages: list[float] = []
            while time.monotonic() - t0 < seconds:
                await asyncio.sleep(0.1)
                now = time.time()
                ages.extend(now - r.metrics.update_time for r in app.store)
            elapsed = time.monotonic() - t0
            polls = app.collector.polls() - polls0
            times1 = os.times()
            user = times1.user - times0.user
            system = times1.system - times0.system
            cpu = user + system
            commits = app.store.revision - rev0
            errors = app.metrics_errors() - errors0
            stale = sum(r.stale for r in app.store)
        finally:
            await app.stop()
    pods = len(ports)
    nominal = pods / (interval_ms / 1000)
    return {
        "client": client,
        "pods": pods,
        "interval_ms": interval_ms,
        "nominal_per_s": nominal,
        "achieved_per_s": polls / elapsed,
        "achieved_pct": 100 * polls / elapsed / nominal,
        "cpu_us_per_scrape": cpu / polls * 1e6 if polls else float("nan"),
        "cpu_cores": cpu / elapsed,
        "user_us_per_scrape": user / polls * 1e6 if polls else float("nan"),
        "sys_us_per_scrape": system / polls * 1e6 if polls else float("nan"),
        "commits_per_s": commits / elapsed,
        "poll_errors": errors,
        "age_p50_ms": percentile(ages, 0.5) * 1000,
        "age_p99_ms": percentile(ages, 0.99) * 1000,
        "age_mean_ms": statistics.fmean(ages) * 1000 if ages else float("nan"),
        "stale_at_end": stale,
        "rss_mib": rss_kib() / 1024,
    }


async def run_config(
    pods: int, interval_ms: float, churn: bool, args: argparse.Namespace
) -> list[dict[str, Any]]:
    page = "churn" if churn else "static"
    progress(f"starting {pods} mock pods ({page} pages, {args.pod_processes} processes)")
    procs, ports = await start_mock_pods(
        pods, args.pod_processes, extra=["--churn"] if churn else []
    )
    results = []
    try:
        for _ in range(args.repeat):
            for client in args.clients:
                progress(f"{pods} pods @ {interval_ms:g} ms, {page}, {client}: {args.seconds:g}s")
                if client == "floor":
                    result = await measure_floor(ports, interval_ms, args.seconds, args.warmup)
                else:
                    result = await measure(ports, interval_ms, client, args.seconds, args.warmup)
                result["page"] = page
                results.append(result)
    finally:
        for process in procs:
            process.terminate()
        for process in procs:
            await process.wait()
    return results


def _patch_error_counter() -> None:
    """Count poll errors through the app's self-metrics, whatever their labels."""

    def metrics_errors(self: DataLayerApp) -> float:
        total = 0.0
        for metric in self.metrics.registry.collect():
            if metric.name == "datalayer_poll_errors":
                total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
        return total

    DataLayerApp.metrics_errors = metrics_errors  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--interval", type=float, nargs="+", default=[50.0, 250.0], help="ms")
    parser.add_argument(
        "--pages", nargs="+", choices=("static", "churn"), default=["static", "churn"]
    )
    parser.add_argument("--clients", nargs="+", choices=list(CLIENTS), default=list(CLIENTS))
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--repeat", type=int, default=1, help="runs per client (noisy hosts)")
    parser.add_argument("--pod-processes", type=int, default=2)
    args = parser.parse_args()
    if len(args.interval) == 1:
        args.interval *= len(args.pods)
    _patch_error_counter()
    results: list[dict[str, Any]] = []

    async def all_runs() -> None:
        for pods, interval in zip(args.pods, args.interval, strict=True):
            for page in args.pages:
                results.extend(await run_config(pods, interval, page == "churn", args))

    run_async(all_runs)
    floors = {
        (r["pods"], r["interval_ms"], r["page"]): r["cpu_us_per_scrape"]
        for r in results
        if r["client"] == "floor"
    }
    for r in results:
        floor = floors.get((r["pods"], r["interval_ms"], r["page"]))
        r["x_floor"] = r["cpu_us_per_scrape"] / floor if floor else float("nan")
    print_table(
        "collector: data-layer process cost per scrape (httptools, aiohttp; floor = a bare "
        "keep-alive client, same pods and rate, parsing nothing)",
        [
            "pods",
            "interval ms",
            "page",
            "client",
            "nominal/s",
            "achieved/s",
            "%",
            "CPU µs/scrape",
            "x floor",
            "user",
            "sys",
            "cores",
            "commits/s",
            "errors",
            "age p50 ms",
            "age p99 ms",
            "RSS MiB",
        ],
        [
            [
                r["pods"],
                r["interval_ms"],
                r["page"],
                r["client"],
                r["nominal_per_s"],
                r["achieved_per_s"],
                r["achieved_pct"],
                r["cpu_us_per_scrape"],
                r["x_floor"],
                r["user_us_per_scrape"],
                r["sys_us_per_scrape"],
                r["cpu_cores"],
                r["commits_per_s"],
                r["poll_errors"],
                r["age_p50_ms"],
                r["age_p99_ms"],
                r["rss_mib"],
            ]
            for r in results
        ],
    )
    write_json("collector", {"runs": results})


if __name__ == "__main__":
    main()
