"""The collector under load: N mock pods in another process, scraped at a given interval.

    .venv/bin/python bench/collector.py --pods 100 --interval 50 --seconds 20

Reports achieved scrapes/s against the nominal rate, the data layer's CPU per scrape (this
process's CPU time / completed scrapes: HTTP, scan, extract, commit), the data age at read
time (sampled from the store every 100 ms), and RSS. The pods run in a separate process so
their CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from datalayer.config import load_config_text
from datalayer.registry import default_registry
from server.app import DataLayerApp, ServeOptions
from server.cli import run_async

from common import print_table, progress, write_json

CONFIG = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
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


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def start_pods(count: int) -> tuple[asyncio.subprocess.Process, list[int]]:
    datalayer = str(Path(sys.executable).with_name("datalayer"))
    process = await asyncio.create_subprocess_exec(
        *[datalayer, "mock-pod", "--port", "0", "--count", str(count), "--name", "bench"],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    ports: list[int] = []
    while len(ports) < count:
        line = (await process.stdout.readline()).decode()
        if not line:
            raise RuntimeError("mock pods exited before starting")
        match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
        if match:
            ports.append(int(match.group(1)))
    return process, ports


async def run(pods: int, interval_ms: float, seconds: float, warmup: float) -> dict[str, Any]:
    progress(f"starting {pods} mock pods")
    process, ports = await start_pods(pods)
    try:
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
            text = CONFIG.format(endpoints=endpoints, interval=interval_ms)
            config = load_config_text(text, default_registry())
            app = DataLayerApp(
                config, ServeOptions(grpc_host="127.0.0.1", grpc_port=0, metrics_port=None)
            )
            await app.start()
            try:
                progress(f"warming up {warmup:g}s")
                await asyncio.sleep(warmup)
                polls0, cpu0, t0 = app.collector.polls(), time.process_time(), time.monotonic()
                ages: list[float] = []
                progress(f"measuring {seconds:g}s at {pods} pods @ {interval_ms:g} ms")
                while time.monotonic() - t0 < seconds:
                    await asyncio.sleep(0.1)
                    now = time.time()
                    ages.extend(now - r.metrics.update_time for r in app.store)
                elapsed = time.monotonic() - t0
                polls = app.collector.polls() - polls0
                cpu = time.process_time() - cpu0
                stale = sum(r.stale for r in app.store)
            finally:
                await app.stop()
    finally:
        process.terminate()
        await process.wait()
    nominal = pods / (interval_ms / 1000)
    return {
        "pods": pods,
        "interval_ms": interval_ms,
        "nominal_per_s": nominal,
        "achieved_per_s": polls / elapsed,
        "achieved_pct": 100 * polls / elapsed / nominal,
        "cpu_us_per_scrape": cpu / polls * 1e6 if polls else float("nan"),
        "cpu_cores": cpu / elapsed,
        "age_p50_ms": percentile(ages, 0.5) * 1000,
        "age_p99_ms": percentile(ages, 0.99) * 1000,
        "age_mean_ms": statistics.fmean(ages) * 1000 if ages else float("nan"),
        "stale_at_end": stale,
        "rss_mib": rss_kib() / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, nargs="+", default=[100])
    parser.add_argument("--interval", type=float, nargs="+", default=[50.0], help="ms")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3)
    args = parser.parse_args()
    if len(args.interval) == 1:
        args.interval *= len(args.pods)
    results: list[dict[str, Any]] = []

    async def all_runs() -> None:
        for pods, interval in zip(args.pods, args.interval, strict=True):
            results.append(await run(pods, interval, args.seconds, args.warmup))

    run_async(all_runs)
    print_table(
        "collector: data-layer process cost per scrape",
        [
            "pods",
            "interval ms",
            "nominal/s",
            "achieved/s",
            "%",
            "CPU µs/scrape",
            "cores",
            "age p50 ms",
            "age p99 ms",
            "RSS MiB",
        ],
        [
            [
                r["pods"],
                r["interval_ms"],
                r["nominal_per_s"],
                r["achieved_per_s"],
                r["achieved_pct"],
                r["cpu_us_per_scrape"],
                r["cpu_cores"],
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
