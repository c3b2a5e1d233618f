"""The precise prefix-cache index: ingest rate, MatchPrefix latency, memory per entry.

    .venv/bin/python bench/kv_index.py [--quick]

1. ingest, decode + index on one core: pre-encoded vLLM batches (BlockStored events of
   16-token blocks, 100 pods' chains) decoded by the source's BatchDecoder and applied to
   the index, timed in-process (CPU time of this process);
2. ingest through ZMQ: 100 real PUB sockets in a child process, the real source and
   extractor here; blocks/s and this process's CPU seconds, so blocks per CPU-second is
   what one core of the data layer does including ZMQ receive;
3. MatchPrefix p50/p99 for 1k, 8k and 100k-token prompts over 100 pods holding it (the worst
   case: every block of the prompt is walked), index only and over real gRPC;
4. bytes per (block, pod) entry at 1,000,000 entries (tracemalloc: every object the index
   allocated, engine map included), for distinct blocks and for blocks shared by 10 pods;
5. one index for N schedulers vs N in-scheduler copies, on paper from (4).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import os
import random
import socket
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plugins.extractors.kv_block_index.index import PrefixIndex
from plugins.sources.kv_events.wire import BatchDecoder, encode_batch, stored_event

from common import percentile, print_table, write_json

BLOCK = 16
PODS = 100
MODEL = "bench-model"


def _chains(pods: int, blocks_per_event: int, events_per_pod: int, seed: int = 1) -> list[bytes]:
    """Pre-encoded batches: per pod, `events_per_pod` events each extending its chain."""
    rng = random.Random(seed)
    payloads = []
    for pod in range(pods):
        parent: int | None = None
        for e in range(events_per_pod):
            tokens = [rng.randrange(50_000) for _ in range(BLOCK * blocks_per_event)]
            hashes = [(pod << 40) | (e * blocks_per_event + i) for i in range(blocks_per_event)]
            payloads.append(
                encode_batch(time.time(), [stored_event(hashes, parent, tokens, BLOCK)])
            )
            parent = hashes[-1]
    return payloads


def bench_ingest(quick: bool) -> list[list[Any]]:
    rows = []
    for blocks_per_event in (1, 8, 32):
        events_per_pod = (200 if quick else 1000) // blocks_per_event * 4
        payloads = _chains(PODS, blocks_per_event, events_per_pod)
        names = [f"pod-{i // events_per_pod}" for i in range(len(payloads))]
        decoder = BatchDecoder()
        index = PrefixIndex(BLOCK, capacity=50_000_000)
        # Decode alone (results dropped, as the source drops them once applied), then the
        # real path: each payload decoded and applied at once; index = the difference.
        start = time.process_time()
        for payload in payloads:
            decoder.decode(payload)
        mid = time.process_time()
        for name, payload in zip(names, payloads, strict=True):
            index.apply(name, MODEL, decoder.decode(payload).events)
        end = time.process_time()
        decode_s, both_s = mid - start, end - mid
        blocks = len(payloads) * blocks_per_event
        rows.append(
            [
                blocks_per_event,
                blocks,
                f"{blocks / decode_s:,.0f}",
                f"{blocks / (both_s - decode_s):,.0f}",
                f"{blocks / both_s:,.0f}",
            ]
        )
    return rows


# --- through ZMQ: publishers in a child process ---


def _publisher_main(port: int, payloads_per_pod: list[list[bytes]], ready: Any, go: Any) -> None:
    import zmq

    context = zmq.Context()
    sockets = []
    for pod in range(len(payloads_per_pod)):
        pub = context.socket(zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, 1_000_000)
        pub.bind(f"tcp://127.0.0.{pod + 2}:{port}")
        sockets.append(pub)
    ready.set()
    go.wait()
    seqs = [1] * len(sockets)
    rounds = max(len(p) for p in payloads_per_pod)
    for r in range(rounds):
        for pod, pub in enumerate(sockets):
            if r < len(payloads_per_pod[pod]):
                pub.send_multipart(
                    [
                        b"kv@x@" + MODEL.encode(),
                        seqs[pod].to_bytes(8, "big"),
                        payloads_per_pod[pod][r],
                    ]
                )
                seqs[pod] += 1
    time.sleep(2)
    for pub in sockets:
        pub.close(linger=1000)
    context.term()


async def _zmq_ingest(quick: bool, blocks_per_event: int) -> list[Any]:
    from datalayer.model import EndpointSpec, EndpointUpdate
    from plugins.extractors.kv_block_index.extractor import (
        KvBlockIndexExtractor,
        KvBlockIndexParameters,
    )
    from plugins.sources.kv_events.source import KvEventsDataSource, KvEventsSourceParameters

    events_per_pod = (100 if quick else 400) * 8 // blocks_per_event
    flat = _chains(PODS, blocks_per_event, events_per_pod)
    per_pod = [flat[i * events_per_pod : (i + 1) * events_per_pod] for i in range(PODS)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_publisher_main, args=(port, per_pod, ready, go))
    child.start()
    ready.wait(30)
    extractor = KvBlockIndexExtractor("idx", KvBlockIndexParameters(capacity=50_000_000))
    source = KvEventsDataSource("kv", KvEventsSourceParameters(port=port))
    source.start([extractor])
    specs = {f"pod-{i}": EndpointSpec(f"pod-{i}", f"127.0.0.{i + 2}", 8000) for i in range(PODS)}
    expected = PODS * events_per_pod * blocks_per_event

    class Sink:
        def deliver(self, name: str, payload: Any) -> bool:
            extractor.extract(payload, specs[name], EndpointUpdate())
            return True

    source.update_endpoints(specs)
    task = asyncio.create_task(source.run(Sink()))
    await asyncio.sleep(1.5)  # every SUB joined (the publishers wait for `go`)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    go.set()
    deadline = wall0 + 120
    while extractor.index.entry_count() < expected and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    got = extractor.index.entry_count()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    child.join(10)
    gaps = sum(s.missed for s in source.sequences.values())
    return [
        blocks_per_event,
        f"{got:,} / {expected:,}",
        f"{got / wall:,.0f}",
        f"{cpu:.2f}",
        f"{got / cpu:,.0f}",
        gaps,
    ]


def bench_zmq(quick: bool) -> list[list[Any]]:
    return [asyncio.run(_zmq_ingest(quick, bpe)) for bpe in (8, 32)]


# --- MatchPrefix ---


def _held_prompt_index(tokens: list[int]) -> PrefixIndex:
    index = PrefixIndex(BLOCK, capacity=50_000_000)
    decoder = BatchDecoder()
    blocks = len(tokens) // BLOCK
    for pod in range(PODS):
        hashes = [(pod << 40) | i for i in range(blocks)]
        payload = encode_batch(0.0, [stored_event(hashes, None, tokens[: blocks * BLOCK], BLOCK)])
        index.apply(f"pod-{pod}", MODEL, decoder.decode(payload).events)
    return index


def bench_match(
    quick: bool,
) -> tuple[list[list[Any]], dict[int, tuple[PrefixIndex, list[int]]]]:
    rng = random.Random(7)
    rows = []
    indexes = {}
    for length in (1_000, 8_000, 100_000):
        tokens = [rng.randrange(50_000) for _ in range(length)]
        index = _held_prompt_index(tokens)
        indexes[length] = (index, tokens)
        runs = 30 if length == 100_000 else (200 if quick else 1000)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            matches, total = index.match(MODEL, tokens)
            times.append(time.perf_counter() - t0)
        assert len(matches) == PODS
        assert total == length // BLOCK
        miss = [1, *tokens[1:]]
        t0 = time.perf_counter()
        for _ in range(runs):
            index.match(MODEL, miss)
        miss_us = (time.perf_counter() - t0) / runs * 1e6
        rows.append(
            [
                f"{length:,}",
                length // BLOCK,
                f"{percentile(times, 0.50) * 1e3:.3f}",
                f"{percentile(times, 0.99) * 1e3:.3f}",
                f"{miss_us:.1f}",
            ]
        )
    return rows, indexes


async def _grpc_match(index: PrefixIndex, tokens: list[int], runs: int) -> list[Any]:
    import grpc

    from datalayer.hub import Hub
    from datalayer.store import EndpointStore
    from datalayer.v1 import datalayer_pb2 as pb
    from datalayer.v1 import datalayer_pb2_grpc as pb_grpc
    from server.prefix import PrefixMatcher
    from server.service import DataLayerService, add_to_server

    store = EndpointStore()
    service = DataLayerService(store, Hub(store), prefix=PrefixMatcher(store, lambda: [index]))
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 8 << 20)])
    add_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    request = pb.MatchPrefixRequest(model=MODEL, token_ids=tokens)
    times = []
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 8 << 20)]
    ) as channel:
        stub = pb_grpc.DataLayerStub(channel)
        await stub.MatchPrefix(request)
        for _ in range(runs):
            t0 = time.perf_counter()
            response = await stub.MatchPrefix(request)
            times.append(time.perf_counter() - t0)
        assert len(response.matches) == PODS
    await server.stop(None)
    return [
        f"{len(tokens):,}",
        f"{percentile(times, 0.50) * 1e3:.3f}",
        f"{percentile(times, 0.99) * 1e3:.3f}",
    ]


def bench_grpc(indexes: dict[int, tuple[PrefixIndex, list[int]]], quick: bool) -> list[list[Any]]:
    rows = []
    for length, (index, tokens) in indexes.items():
        runs = 20 if length == 100_000 else (100 if quick else 500)
        rows.append(asyncio.run(_grpc_match(index, tokens, runs)))
    return rows


# --- memory ---


def _memory(entries: int, pods_per_key: int) -> list[Any]:
    keys = entries // pods_per_key
    blocks_per_event = 32
    decoder = BatchDecoder()
    rng = random.Random(3)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    index = PrefixIndex(BLOCK, capacity=50_000_000)
    pods = PODS
    # Each chain (32 blocks) is stored by `pods_per_key` pods, chosen round-robin.
    chains = keys // blocks_per_event
    for c in range(chains):
        tokens = [rng.randrange(50_000) for _ in range(BLOCK * blocks_per_event)]
        for k in range(pods_per_key):
            pod = (c * pods_per_key + k) % pods
            hashes = [rng.getrandbits(64) for _ in range(blocks_per_event)]  # per-pod seeds
            batch = decoder.decode(encode_batch(0.0, [stored_event(hashes, None, tokens, BLOCK)]))
            index.apply(f"pod-{pod}", MODEL, batch.events)
            del batch
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    held = index.entry_count()
    return [
        f"{held:,}",
        pods_per_key,
        f"{index.key_count():,}",
        f"{len(index.engine):,}",
        f"{used / 2**20:,.1f}",
        f"{used / held:,.0f}",
    ], used / held


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"load_before": os.getloadavg()}
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

    rows = bench_ingest(args.quick)
    results["ingest"] = rows
    print_table(
        "ingest, decode + index, one core (100 pods' chains, 16-token blocks)",
        [
            "blocks/event",
            "blocks",
            "decode blocks/s",
            "index blocks/s (by difference)",
            "decode+index blocks/s",
        ],
        rows,
    )
    rows = bench_zmq(args.quick)
    results["ingest_zmq"] = rows
    print_table(
        "ingest through ZMQ: 100 PUB sockets (child process) -> source + index (this process)",
        ["blocks/event", "blocks indexed", "blocks/s wall", "CPU s", "blocks per CPU-s", "missed"],
        rows,
    )
    rows, indexes = bench_match(args.quick)
    results["match"] = rows
    print_table(
        "MatchPrefix in the index, 100 pods holding the whole prompt (every block walked)",
        ["prompt tokens", "blocks", "p50 ms", "p99 ms", "miss (first block) µs"],
        rows,
    )
    rows = bench_grpc(indexes, args.quick)
    results["match_grpc"] = rows
    print_table(
        "MatchPrefix over real gRPC (loopback, grpc.aio client in the same process)",
        ["prompt tokens", "p50 ms", "p99 ms"],
        rows,
    )
    del indexes
    gc.collect()
    entries = 200_000 if args.quick else 1_000_000
    mem_rows = []
    per_entry = {}
    for pods_per_key in (1, 10):
        row, bytes_each = _memory(entries, pods_per_key)
        mem_rows.append(row)
        per_entry[pods_per_key] = bytes_each
    results["memory"] = mem_rows
    print_table(
        f"memory at ~{entries:,} (block, pod) entries (tracemalloc, engine map included)",
        ["entries", "pods per key", "keys", "engine hashes", "MiB", "bytes/entry"],
        mem_rows,
    )
    worst = per_entry[1]
    paper = []
    for schedulers in (1, 4, 20):
        for total in (1_000_000, 10_000_000):
            one = worst * total / 2**30
            paper.append(
                [
                    schedulers,
                    f"{total:,}",
                    f"{one:.2f}",
                    f"{one * schedulers:.2f}",
                    f"{schedulers}x",
                ]
            )
    results["paper"] = paper
    print_table(
        "one index for N schedulers vs N in-scheduler copies (from the distinct-block figure)",
        ["schedulers", "entries", "one index GiB", "N copies GiB", "saved"],
        paper,
    )
    results["load_after"] = os.getloadavg()
    print(f"\nload average after: {os.getloadavg()[0]:.2f} (latency tails move with it)")
    write_json("kv_index", results)


if __name__ == "__main__":
    main()
