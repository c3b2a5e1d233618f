"""``datalayer mock-pod`` / ``python -m mockpod``: host N mock pods on ports P..P+N-1."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from mockpod.server import PodGroup, serve_forever
from mockpod.spec import DEFAULT_MODEL, PodSpec, consecutive_specs

__all__ = ["add_arguments", "run", "spec_from_args"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The mock-pod options, for whichever parser hosts the command."""
    defaults = PodSpec()
    parser.add_argument("--port", type=int, default=8000, help="first port (default 8000)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="served model name")
    parser.add_argument("--lora", default="", help="comma-separated LoRA adapter names")
    parser.add_argument(
        "--max-lora", type=_positive, default=defaults.max_lora, help="vLLM --max-loras"
    )
    parser.add_argument(
        "--enable-lora", action="store_true", help="show the LoRA metric even with no adapters"
    )
    parser.add_argument("--count", type=_positive, default=1, help="pods on consecutive ports")
    parser.add_argument(
        "--engines", type=_positive, default=1, help="data-parallel engines per pod"
    )
    parser.add_argument("--engine-type", choices=("vllm", "sglang"), default="vllm")
    parser.add_argument("--name", default="mock-pod", help="pod name; -<i> added with --count")
    parser.add_argument("--max-num-seqs", type=_positive, default=defaults.max_num_seqs)
    parser.add_argument("--max-model-len", type=_positive, default=defaults.max_model_len)
    parser.add_argument("--block-size", type=_positive, default=defaults.block_size)
    parser.add_argument("--num-gpu-blocks", type=_positive, default=defaults.num_gpu_blocks)
    parser.add_argument(
        "--seconds-per-token",
        type=float,
        default=defaults.seconds_per_output_token,
        help="simulated decode time per output token",
    )
    parser.add_argument(
        "--max-request-seconds",
        type=float,
        default=defaults.max_request_seconds,
        help="cap on one request's simulated run time",
    )
    parser.add_argument(
        "--gzip", action="store_true", help="gzip /metrics for clients that accept it, as vLLM"
    )
    parser.add_argument(
        "--churn",
        action="store_true",
        help="change the waiting/running/KV gauges on every /metrics request (benchmarks)",
    )
    parser.add_argument(
        "--kv-events-port",
        type=int,
        default=None,
        help="publish vLLM KV-cache events (ZMQ PUB) from this port (+i with --count)",
    )
    parser.add_argument(
        "--kv-events-replay-port", type=int, default=None, help="also a replay ROUTER (+i)"
    )
    parser.add_argument("--kv-events-shape", choices=("array", "map"), default="array")


def spec_from_args(args: argparse.Namespace) -> PodSpec:
    """The first pod's spec; ``--count`` copies it onto the following ports."""
    return PodSpec(
        model=args.model,
        port=args.port,
        name=args.name,
        engine_type=args.engine_type,
        engines=args.engines,
        loras=tuple(name.strip() for name in args.lora.split(",") if name.strip()),
        enable_lora=args.enable_lora,
        max_lora=args.max_lora,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        block_size=args.block_size,
        num_gpu_blocks=args.num_gpu_blocks,
        seconds_per_output_token=args.seconds_per_token,
        max_request_seconds=args.max_request_seconds,
        gzip=args.gzip,
        churn=args.churn,
        kv_events_port=args.kv_events_port,
        kv_events_replay_port=args.kv_events_replay_port,
        kv_events_shape=args.kv_events_shape,
    )


def _announce(group: PodGroup) -> None:
    for pod in group.pods:
        spec = pod.spec
        print(
            f"mock pod {spec.name} ({spec.engine_type}, model {spec.model}, "
            f"{spec.engines} engine(s), LoRA {','.join(spec.loras) or '-'}) on {pod.url}",
            flush=True,
        )


async def run(args: argparse.Namespace) -> None:
    """Serve the pods until SIGINT or SIGTERM, then close them cleanly."""
    specs = consecutive_specs(spec_from_args(args), args.count)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await serve_forever(specs, args.host, stop=stop, on_ready=_announce)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    print("mock pods stopped", file=sys.stderr, flush=True)
