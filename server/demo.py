"""`datalayer demo`: the whole path on one machine, with nothing to configure.

Starts three mock vLLM pods (different models, loads and LoRA adapters),
the data layer on them (file discovery, the embedded default config), a load
generator that keeps their queues moving (and now and then breaks one pod for
a few seconds, so staleness shows), and a Watch subscriber that prints each
update it receives over gRPC, until Ctrl-C.

It listens where the README's examples point (gRPC on 9002, metrics on 9090, pods `vllm-0`..
`vllm-2` with `app=vllm` on 8000-8002), so those commands work as written; a port that is
taken is replaced by a free one, said so, and the commands printed at start-up name the ports
actually in use (tests/test_grpcurl.py and tests/test_readme_examples.py run them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TextIO

import aiohttp
import yaml

from datalayer.client import DataLayerClient
from datalayer.config import load_config_text
from datalayer.registry import default_registry
from datalayer.v1 import datalayer_pb2 as pb
from mockpod.server import KV_EVENTS, MockPod, PodGroup, start_pods
from mockpod.spec import PodSpec
from server.app import DataLayerApp, ServeOptions
from server.runtime import wait_for_signal

DEMO_CONFIG = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
- type: core-metrics-extractor
- type: file-discovery
  parameters: {{path: {endpoints}}}
- type: kv-events-data-source
- type: kv-block-index
  parameters: {{blockSize: 16}}
dataLayer:
  interval: 50ms
  sources:
  - pluginRef: metrics-data-source
    extractors: [{{pluginRef: core-metrics-extractor}}]
  - pluginRef: kv-events-data-source
    extractors: [{{pluginRef: kv-block-index}}]
  discovery: {{pluginRef: file-discovery}}
"""

#: Where the README's examples point: the service's own defaults, and the first pod port of
#: `datalayer mock-pod --port 8000 --count 3`.
GRPC_PORT = 9002
METRICS_PORT = 9090
FIRST_POD_PORT = 8000
#: The pods' KV-event publishers (vLLM's default 5557, one per pod on this one address).
FIRST_KV_EVENTS_PORT = 5557
#: vllm-0's system prompt (48 bytes: 3 blocks of 16 by the mock's one-token-per-byte stand-in
#: tokenizer); the README's MatchPrefix asks for it, and vllm-0 is the pod that holds it.
DEMO_PROMPT = "You are a concise assistant; answer in one line."
HOST = "127.0.0.1"

# Small KV caches and few sequences, so a handful of requests shows as queueing and KV use.
# Named as in the README (vllm-0..2, all labelled app=vllm by the endpoints file below).
DEMO_PODS = (
    PodSpec(name="vllm-0", model="meta-llama/Llama-3.1-8B-Instruct", num_gpu_blocks=256),
    PodSpec(
        name="vllm-1",
        model="meta-llama/Llama-3.1-8B-Instruct",
        loras=("sql-lora", "chat-lora"),
        max_lora=2,
        max_num_seqs=4,
        num_gpu_blocks=256,
    ),
    PodSpec(
        name="vllm-2",
        model="Qwen/Qwen2.5-7B-Instruct",
        engines=2,
        max_num_seqs=2,
        num_gpu_blocks=128,
    ),
)
#: The README's grpcurl lines, with `{target}` for the address (tests check they are the same).
GRPCURL_EXAMPLES = (
    "grpcurl -plaintext {target} list",
    "grpcurl -plaintext {target} describe datalayer.v1.DataLayer",
    """grpcurl -plaintext -d '{{"name": "vllm-0"}}' {target} datalayer.v1.DataLayer/GetEndpoint""",
    """grpcurl -plaintext -d '{{"selector": "app=vllm"}}' {target} """
    "datalayer.v1.DataLayer/ListEndpoints",
    """grpcurl -plaintext -d '{{"selector": "app=vllm", "attributes": ["metrics"]}}' {target} """
    "datalayer.v1.DataLayer/Watch",
    """grpcurl -plaintext -d '{{"model": "meta-llama/Llama-3.1-8B-Instruct", "token_ids": """
    + str(list(DEMO_PROMPT.encode()))
    + """}}' {target} datalayer.v1.DataLayer/MatchPrefix""",
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
    kv = _known(m, "kv_cache_usage_percent")
    kv_text = "-" if isinstance(kv, str) else f"{float(kv) * 100:5.1f}%"  # type: ignore[arg-type]
    return (
        f"{stamp} rev={revision:<6} {kind} {ep.name:<8} "
        f"waiting={_known(m, 'waiting_queue_size')!s:<3} "
        f"running={_known(m, 'running_requests_size')!s:<3} "
        f"kv={kv_text} lora=[{lora}] {state}"
    )


def _known(metrics: pb.Metrics, name: str) -> object:
    """The value, or "-" when the field is absent (a value not read is not shown as 0)."""
    if metrics.DESCRIPTOR.fields_by_name[name].has_presence and not metrics.HasField(name):
        return "-"
    return getattr(metrics, name)


async def drive_load(pods: PodGroup, stop: asyncio.Event) -> None:
    """Send bursts of completions so queues, running counts and KV use move."""
    async with aiohttp.ClientSession() as session:
        in_flight: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                for pod, burst in zip(pods.pods, DEMO_BURST, strict=False):
                    models = [pod.spec.model, *pod.spec.loras]
                    for _ in range(random.randint(0, burst)):
                        # Each pod repeats its own system prompt: prefix-cache hits to look up.
                        system = DEMO_PROMPT if pod.spec.name == "vllm-0" else pod.spec.name * 8
                        body = {
                            "model": random.choice(models),
                            "prompt": system + " hello",
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
    if every <= 0:
        return
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


def kv_events_port(pod: MockPod) -> int:
    """The port the pod's KV-event publisher bound (its spec may have asked for any)."""
    return pod.runner.app[KV_EVENTS].publisher.port


def pick_port(wanted: int, what: str, out: TextIO, host: str = HOST) -> int:
    """`wanted` when nothing listens there, else 0 (a free port), saying so; 0 stays 0.

    A probe, so a port taken between the probe and the real bind still fails the start, with
    the error naming the port; that race is acceptable for a demo.
    """
    if wanted == 0:
        return 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR as the servers use: a port in TIME_WAIT is free, a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, wanted))
        except OSError:
            print(
                f"note: {what} port {wanted} is in use, so the demo uses a free port instead; "
                "the commands below name it.",
                file=out,
                flush=True,
            )
            return 0
    return wanted


def banner(app: DataLayerApp, pods: PodGroup, fault_every: float) -> str:
    """What is running where, and the README's commands for the ports actually in use."""
    target = f"localhost:{app.grpc_port}"
    lines = [
        f"data layer: gRPC on {HOST}:{app.grpc_port}, "
        f"metrics on http://{HOST}:{app.metrics_port}/metrics, "
        f"status page on http://{HOST}:{app.metrics_port}/status",
        "mock pods (app=vllm): "
        + ", ".join(f"{pod.spec.name} on http://{HOST}:{pod.port}" for pod in pods.pods),
        "",
        "Try, in another terminal:",
        *(f"  {example.format(target=target)}" for example in GRPCURL_EXAMPLES),
        f"  .venv/bin/datalayer list -s {target}",
        f"  curl -s localhost:{pods.pods[0].port}/control",
        f"""  curl -s localhost:{pods.pods[0].port}/control """
        """-d '{"waiting": 3, "running": 2, "kv_cache_usage": 0.25}'""",
        f"""  curl -s localhost:{pods.pods[1].port}/control -d '{{"fault": "http500"}}'""",
        f"""  curl -s localhost:{pods.pods[1].port}/control """
        """-d '{"fault": null, "reset": true}'""",
        "",
        (
            f"Every {fault_every:g} s one pod fails for 4 s, to show staleness. "
            if fault_every > 0
            else ""
        )
        + "Ctrl-C stops.",
    ]
    return "\n".join(lines)


async def run_demo(
    grpc_port: int = GRPC_PORT,
    duration: float = 0,
    out: TextIO = sys.stdout,
    *,
    metrics_port: int = METRICS_PORT,
    pod_port: int = FIRST_POD_PORT,
    fault_every: float = 20.0,
) -> None:
    """Run until Ctrl-C (or `duration` seconds); ports of 0 are picked free."""
    specs = [
        replace(
            spec,
            port=pick_port(pod_port + i, f"{spec.name}'s", out) if pod_port else 0,
            kv_events_port=pick_port(FIRST_KV_EVENTS_PORT + i, f"{spec.name}'s KV events", out),
        )
        for i, spec in enumerate(DEMO_PODS)
    ]
    grpc_port = pick_port(grpc_port, "the gRPC", out)
    metrics_port = pick_port(metrics_port, "the metrics", out)
    pods = await start_pods(specs, HOST)
    with tempfile.TemporaryDirectory(prefix="datalayer-demo-") as workdir:
        endpoints = Path(workdir) / "endpoints.yaml"
        endpoints.write_text(
            yaml.safe_dump(
                {
                    "endpoints": [
                        {
                            "name": pod.spec.name,
                            "address": HOST,
                            "port": pod.port,
                            "labels": {
                                "app": "vllm",
                                "model": pod.spec.model.split("/")[-1],
                                "datalayer.io/kv-events-port": str(kv_events_port(pod)),
                            },
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
            config,
            ServeOptions(
                grpc_host=HOST,
                grpc_port=grpc_port,
                metrics_host=HOST,
                metrics_port=metrics_port,
            ),
        )
        await app.start()
        stop = asyncio.Event()
        load = asyncio.create_task(drive_load(pods, stop), name="demo-load")
        faults = asyncio.create_task(
            break_now_and_then(pods, stop, every=fault_every), name="demo-faults"
        )
        print(banner(app, pods, fault_every), file=out, flush=True)

        def show(response: pb.WatchResponse) -> None:
            for event in response.events:
                print(format_event(event, response.revision), file=out, flush=True)
            if response.synced:
                print(f"--- synced at revision {response.revision} ---", file=out, flush=True)

        client = DataLayerClient(f"{HOST}:{app.grpc_port}")
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `datalayer demo` flags (kept here so the demo's defaults live with the demo)."""
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=GRPC_PORT,
        help=f"gRPC port (default {GRPC_PORT}, as in the README; a free one if taken; 0: any)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=METRICS_PORT,
        help=f"metrics and /status port (default {METRICS_PORT}; a free one if taken; 0: any)",
    )
    parser.add_argument(
        "--pod-port",
        type=int,
        default=FIRST_POD_PORT,
        help=f"first mock pod port, then +1, +2 (default {FIRST_POD_PORT}; 0: any)",
    )
    parser.add_argument(
        "--fault-every",
        type=float,
        default=20.0,
        help="seconds between injected pod faults (default 20; 0: never)",
    )
    parser.add_argument("--duration", type=float, default=0, help="stop after N seconds (0: never)")


async def run_from_args(args: argparse.Namespace) -> None:
    await run_demo(
        args.grpc_port,
        args.duration,
        metrics_port=args.metrics_port,
        pod_port=args.pod_port,
        fault_every=args.fault_every,
    )
