"""`datalayer demo`: the whole path on one machine, with nothing to configure.

Starts three mock vLLM pods (different models, loads and LoRA adapters),
the data layer on them (file discovery, the embedded default config), a load
generator that keeps their queues moving (and now and then breaks one pod for
a few seconds, so staleness shows), and a Watch subscriber that prints each
update it receives over gRPC, until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

import aiohttp
import yaml

from datalayer.client import DataLayerClient
from datalayer.config import load_config_text
from datalayer.registry import default_registry
from datalayer.v1 import datalayer_pb2 as pb
from mockpod.server import PodGroup, start_pods
from mockpod.spec import PodSpec
from server.app import DataLayerApp, ServeOptions
from server.cli import wait_for_signal

DEMO_CONFIG = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
- type: core-metrics-extractor
- type: file-discovery
  parameters: {{path: {endpoints}}}
dataLayer:
  interval: 50ms
  sources:
  - pluginRef: metrics-data-source
    extractors: [{{pluginRef: core-metrics-extractor}}]
  discovery: {{pluginRef: file-discovery}}
"""

# Small KV caches and few sequences, so a handful of requests shows as queueing and KV use.
DEMO_PODS = (
    PodSpec(name="llama-a", model="meta-llama/Llama-3.1-8B-Instruct", num_gpu_blocks=256),
    PodSpec(
        name="llama-b",
        model="meta-llama/Llama-3.1-8B-Instruct",
        loras=("sql-lora", "chat-lora"),
        max_lora=2,
        max_num_seqs=4,
        num_gpu_blocks=256,
    ),
    PodSpec(
        name="qwen-c",
        model="Qwen/Qwen2.5-7B-Instruct",
        engines=2,
        max_num_seqs=2,
        num_gpu_blocks=128,
    ),
)
#: Requests per burst for each pod: light, medium and heavy load.
DEMO_BURST = (2, 5, 9)

_EVENT_NAMES = {
    pb.WatchEvent.ADDED: "ADDED  ",
    pb.WatchEvent.UPDATED: "UPDATED",
    pb.WatchEvent.REMOVED: "REMOVED",
}


def format_event(event: pb.WatchEvent, revision: int) -> str:
    """One terminal line per event: what a scheduler would look at."""
    stamp = time.strftime("%H:%M:%S")
    kind = _EVENT_NAMES.get(event.type, "?")
    ep = event.endpoint
    if event.type == pb.WatchEvent.REMOVED:
        return f"{stamp} rev={revision:<6} {kind} {ep.name}"
    m = ep.metrics
    lora = ",".join(m.active_models) or "-"
    state = f"STALE ({ep.last_error})" if ep.stale else "fresh"
    return (
        f"{stamp} rev={revision:<6} {kind} {ep.name:<8} waiting={m.waiting_queue_size:<3} "
        f"running={m.running_requests_size:<3} kv={m.kv_cache_usage_percent * 100:5.1f}% "
        f"lora=[{lora}] {state}"
    )


async def drive_load(pods: PodGroup, stop: asyncio.Event) -> None:
    """Send bursts of completions so queues, running counts and KV use move."""
    async with aiohttp.ClientSession() as session:
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                for pod, burst in zip(pods.pods, DEMO_BURST, strict=False):
                    models = [pod.spec.model, *pod.spec.loras]
                    for _ in range(random.randint(0, burst)):
                        body = {
                            "model": random.choice(models),
                            "prompt": "hello",
                            "max_tokens": random.randint(100, 1000),
                        }
                        task = asyncio.create_task(
                            _post(session, f"{pod.url}/v1/completions", body)
                        )
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=random.uniform(0.5, 1.5))
        finally:
            for task in list(in_flight):
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)


async def break_now_and_then(pods: PodGroup, stop: asyncio.Event, every: float = 20.0) -> None:
    """Every `every` seconds one pod answers HTTP 500 for a while, so staleness shows."""
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)
                return
            pod = random.choice(pods.pods)
            await _post(session, f"{pod.url}/control", {"fault": "http500"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=4.0)
            await _post(session, f"{pod.url}/control", {"fault": None})


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, object]) -> None:
    with contextlib.suppress(aiohttp.ClientError):
        async with session.post(url, json=body) as response:
            await response.read()


async def run_demo(grpc_port: int = 0, duration: float = 0, out: TextIO = sys.stdout) -> None:
    pods = await start_pods(DEMO_PODS)
    with tempfile.TemporaryDirectory(prefix="datalayer-demo-") as workdir:
        endpoints = Path(workdir) / "endpoints.yaml"
        endpoints.write_text(
            yaml.safe_dump(
                {
                    "endpoints": [
                        {
                            "name": pod.spec.name,
                            "address": "127.0.0.1",
                            "port": pod.port,
                            "labels": {"app": "vllm", "model": pod.spec.model.split("/")[-1]},
                        }
                        for pod in pods.pods
                    ]
                }
            )
        )
        config = load_config_text(
            DEMO_CONFIG.format(endpoints=endpoints), default_registry(), file="<demo>"
        )
        app = DataLayerApp(
            config, ServeOptions(grpc_host="127.0.0.1", grpc_port=grpc_port, metrics_port=0)
        )
        await app.start()
        stop = asyncio.Event()
        load = asyncio.create_task(drive_load(pods, stop), name="demo-load")
        faults = asyncio.create_task(break_now_and_then(pods, stop), name="demo-faults")
        target = f"127.0.0.1:{app.grpc_port}"
        print(
            f"data layer on {target} (metrics: http://127.0.0.1:{app.metrics_port}/metrics); "
            f"mock pods on ports {', '.join(map(str, pods.ports))}. Every 20 s one pod fails "
            "for 4 s, to show staleness. Ctrl-C stops.",
            file=out,
            flush=True,
        )

        def show(response: pb.WatchResponse) -> None:
            for event in response.events:
                print(format_event(event, response.revision), file=out, flush=True)
            if response.synced:
                print(f"--- synced at revision {response.revision} ---", file=out, flush=True)

        client = DataLayerClient(target)
        try:
            async with client.mirror(on_response=show, min_interval=0.5):
                if duration > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wait_for_signal(), timeout=duration)
                else:
                    await wait_for_signal()
        finally:
            stop.set()
            await asyncio.gather(load, faults)
            await client.close()
            await app.stop()
            await pods.close()
