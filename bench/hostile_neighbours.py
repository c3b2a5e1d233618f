"""What one hostile pod does to everybody else: healthy pods' data age and event-loop stalls.

    .venv/bin/python bench/hostile_neighbours.py [--pods 20] [--seconds 10]

Issue 10, items 7 and 8, end to end: the service scrapes `--pods` healthy mock pods and, beside
them, hostile pods served from another process: one page with 100,000 series of a wanted
family, one with a LoRA label listing 1,000,000 adapters, one with a 10 MB label that changes
on every scrape. Each scenario runs the real app (file discovery, metrics-data-source,
core-metrics-extractor) for `--seconds` and reports the healthy pods' data age (sampled every
100 ms), the event loop's stall (how late a 10 ms timer fires: every RPC waits as long), the
process RSS growth, and what the service says about the hostile pod.

Only stable APIs are used (`DataLayerApp`, `load_config_text`), so the same script measures an
older checkout: `PYTHONPATH=/path/to/old/checkout .venv/bin/python bench/hostile_neighbours.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
import yaml
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datalayer.config import load_config_text
from datalayer.registry import default_registry
from server.app import DataLayerApp, ServeOptions

from common import percentile, print_table, progress, rss_kib, start_mock_pods

CONFIG = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
- type: core-metrics-extractor
- type: file-discovery
  parameters: {{path: {endpoints}, watchFile: false}}
dataLayer:
  interval: 50ms
  timeout: 1s
  stalenessThreshold: 2s
  sources:
  - pluginRef: metrics-data-source
    extractors: [{{pluginRef: core-metrics-extractor}}]
  discovery: {{pluginRef: file-discovery}}
"""

BASE = (
    b"# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
    b"# TYPE vllm:num_requests_running gauge\n"
    b'vllm:num_requests_running{engine="0",model_name="m"} 1.0\n'
    b'vllm:num_requests_waiting{engine="0",model_name="m"} 0.0\n'
    b'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.1\n'
)


def series_page() -> bytes:
    lines = (
        b'vllm:num_requests_waiting{engine="%d",model_name="m"} 1.0\n' % i for i in range(100_000)
    )
    return BASE + b"".join(lines)


def adapters_page(tag: str = "a") -> bytes:
    adapters = ",".join(f"{tag}{i}" for i in range(1_000_000)).encode()
    return BASE + (
        b'vllm:lora_requests_info{max_lora="4",running_lora_adapters="%s",'
        b'waiting_lora_adapters=""} 1.7e9\n' % adapters
    )


def serve_hostile(kind: str) -> None:
    """Child process: one hostile pod on a free port; prints the port."""
    counter = [0]
    fixed = series_page() if kind == "series" else adapters_page()

    async def metrics(request: web.Request) -> web.Response:
        if kind == "changing":
            counter[0] += 1
            label = (b"x%d" % counter[0]) * (10 * 1024 * 1024 // 8)
            body = BASE + b'vllm:lora_requests_info{max_lora="4",running_lora_adapters="' + label
            body += b'",waiting_lora_adapters=""} 1.7e9\n'
        else:
            body = fixed
        return web.Response(body=body, content_type="text/plain")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(port, flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


async def start_hostile(kind: str) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve-hostile", kind, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    return process, int((await process.stdout.readline()).decode())


async def scenario(ports: list[int], kind: str, seconds: float) -> dict[str, Any]:
    hostile = None
    entries = [
        {"name": f"pod-{i}", "address": "127.0.0.1", "port": port} for i, port in enumerate(ports)
    ]
    if kind != "none":
        hostile, port = await start_hostile(kind)
        entries.append({"name": "hostile", "address": "127.0.0.1", "port": port})
    try:
        with tempfile.TemporaryDirectory() as workdir:
            endpoints = Path(workdir) / "endpoints.yaml"
            endpoints.write_text(yaml.safe_dump({"endpoints": entries}))
            config = load_config_text(CONFIG.format(endpoints=endpoints), default_registry())
            app = DataLayerApp(
                config, ServeOptions(grpc_host="127.0.0.1", grpc_port=0, metrics_port=None)
            )
            await app.start()
            try:
                return await observe(app, kind, seconds)
            finally:
                await app.stop()
    finally:
        if hostile is not None:
            hostile.terminate()
            await hostile.wait()


async def observe(app: DataLayerApp, kind: str, seconds: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(2.0)  # first reads
    rss0 = rss_kib()
    ages: list[float] = []
    lags: list[float] = []
    end = loop.time() + seconds
    next_sample = loop.time()
    while loop.time() < end:
        before = loop.time()
        await asyncio.sleep(0.01)
        lags.append(loop.time() - before - 0.01)
        if loop.time() >= next_sample:
            next_sample += 0.1
            now = time.time()
            for record in app.store:
                if record.name != "hostile" and record.metrics.update_time:
                    ages.append(now - record.metrics.update_time)
    hostile = app.store.get("hostile")
    said = "-"
    if hostile is not None:
        said = f"stale={hostile.stale}; {hostile.last_error[:110]}"
    return {
        "kind": kind,
        "age_p50_ms": percentile(ages, 0.5) * 1000,
        "age_p99_ms": percentile(ages, 0.99) * 1000,
        "age_max_ms": max(ages) * 1000 if ages else float("nan"),
        "lag_p99_ms": percentile(lags, 0.99) * 1000,
        "lag_max_ms": max(lags) * 1000,
        "rss_growth_mib": (rss_kib() - rss0) / 1024,
        "said": said,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--kinds", nargs="+", default=["none", "series", "adapters", "changing"])
    parser.add_argument("--serve-hostile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_hostile:
        serve_hostile(args.serve_hostile)
        return
    results: list[dict[str, Any]] = []

    async def run() -> None:
        procs, ports = await start_mock_pods(args.pods)
        try:
            for kind in args.kinds:
                progress(f"{args.pods} healthy pods beside hostile={kind}: {args.seconds:g}s")
                results.append(await scenario(ports, kind, args.seconds))
        finally:
            for process in procs:
                process.terminate()
            for process in procs:
                await process.wait()

    uvloop.run(run())
    print_table(
        f"healthy pods beside one hostile pod ({args.pods} pods @ 50 ms; code: {os.getcwd()})",
        [
            "hostile",
            "age p50 ms",
            "age p99 ms",
            "age max ms",
            "loop stall p99 ms",
            "loop stall max ms",
            "RSS growth MiB",
            "what the service says of the hostile pod",
        ],
        [
            [
                r["kind"],
                r["age_p50_ms"],
                r["age_p99_ms"],
                r["age_max_ms"],
                r["lag_p99_ms"],
                r["lag_max_ms"],
                r["rss_growth_mib"],
                r["said"],
            ]
            for r in results
        ],
    )


if __name__ == "__main__":
    main()
