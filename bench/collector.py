"""The collector under load: N mock pods in another process, scraped at a given interval.

    .venv/bin/python bench/collector.py                      # 100 pods @ 50 ms, 500 @ 250 ms
    .venv/bin/python bench/collector.py --pods 100 --interval 50 --seconds 20

Each configuration runs with the httptools client and with aiohttp (the baseline) against the
same pods, in this one run, on pages that stay the same between scrapes ("static": most
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
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from datalayer.config import load_config_text
from datalayer.registry import default_registry
from server.app import DataLayerApp, ServeOptions
from server.cli import run_async

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

CLIENTS = {"httptools": "auto", "aiohttp": "aiohttp"}


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
    print_table(
        "collector: data-layer process cost per scrape (httptools client vs aiohttp baseline)",
        [
            "pods",
            "interval ms",
            "page",
            "client",
            "nominal/s",
            "achieved/s",
            "%",
            "CPU µs/scrape",
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
