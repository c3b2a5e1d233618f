"""Replica groups and `serve --workers` (issue 13): what sharing the scraping costs and buys.

One run, ratios from that run (the machine is shared and has 2 cores):

1. CPU per scrape, 1 worker vs 2 (`serve --workers 2`), 100 pods @ 50 ms, pods in another
   process with `--churn` (every scrape changes the gauges, so every scrape is a commit that
   the other worker relays: the replication overhead at its worst). Scrapes counted at the
   pods; CPU from /proc for the whole instance (supervisor and workers). The same run gives
   the rate held against the nominal 2,000/s: on 2 cores the pods' own process is the bound.
2. GetEndpoint/s, 1 worker vs 2, closed-loop callers in two client processes, each call on
   one of several connections (own subchannel pools, so the kernel spreads them).
3. Failover: 3 replicas, 30 pods @ 100 ms, staleness 1 s (= the grace); kill -9 one, time
   until every endpoint is fresh and owned by a survivor on both survivors; restart; repeat.
4. On paper, from 1: replicas and cores for 10,000 endpoints @ 50 ms, replication traffic
   per replica, and where the full-view design stops scaling.

    .venv/bin/python bench/cluster.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import grpc  # noqa: E402
from cluster_stack import (  # noqa: E402
    DATALAYER,
    Pods,
    Replica,
    free_port,
    pod_process,
    stop_process,
    write_endpoints,
)

from bench.common import percentile, print_table, write_json  # noqa: E402
from datalayer.v1 import datalayer_pb2 as pb  # noqa: E402
from datalayer.v1 import datalayer_pb2_grpc as pb_grpc  # noqa: E402

CONFIG = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
  parameters: {{}}
- type: core-metrics-extractor
  parameters: {{}}
- type: file-discovery
  parameters: {{path: {endpoints}, pollInterval: 200ms}}
dataLayer:
  interval: {interval}s
  timeout: 1s
  stalenessThreshold: {staleness}s
  sources:
  - pluginRef: metrics-data-source
    extractors: [{{pluginRef: core-metrics-extractor}}]
  discovery: {{pluginRef: file-discovery}}
{cluster}"""
TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of `root` and its live descendants, from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / TICK
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack += [p for p, parent in parents.items() if parent == pid]
    return total


def config_text(endpoints: Path, interval: float, staleness: float, cluster: str = "") -> str:
    return CONFIG.format(
        endpoints=endpoints, interval=interval, staleness=staleness, cluster=cluster
    )


async def listing(target: str) -> list[pb.Endpoint] | None:
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            response = await pb_grpc.DataLayerStub(channel).ListEndpoints(
                pb.ListEndpointsRequest(), timeout=2
            )
            return list(response.endpoints)
    except grpc.aio.AioRpcError:
        return None


async def wait_fresh(target: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await listing(target)
        if found is not None and len(found) == count and not any(e.stale for e in found):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{target}: {count} fresh endpoints not reached")


async def start_instance(
    tmp: Path, pods: Pods, workers: int, interval: float
) -> tuple[asyncio.subprocess.Process, str]:
    endpoints = tmp / "endpoints.yaml"
    write_endpoints(endpoints, pods)
    config = tmp / f"w{workers}.yaml"
    config.write_text(config_text(endpoints, interval, 2.0))
    port = free_port()
    flags = ["--workers", str(workers)] if workers > 1 else []
    log = (tmp / f"w{workers}.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        DATALAYER,
        "serve",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--grpc-port",
        str(port),
        "--metrics-port",
        "-1",
        "--log-level",
        "warning",
        *flags,
        stdout=log,
        stderr=log,
    )
    log.close()
    target = f"127.0.0.1:{port}"
    await wait_fresh(target, len(pods.ports))
    return process, target


async def measure_scrapes(
    pods: Pods, process: asyncio.subprocess.Process, seconds: float
) -> dict[str, float]:
    await asyncio.sleep(2.0)  # warm: every lane past its first polls
    cpu0, pods0, hits0, t0 = (
        tree_cpu(process.pid),
        tree_cpu(pods.process.pid),
        sum((await pods.hits()).values()),
        time.monotonic(),
    )
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    hits = sum((await pods.hits()).values()) - hits0
    cpu = tree_cpu(process.pid) - cpu0
    return {
        "scrapes_per_s": hits / elapsed,
        "cpu_us_per_scrape": cpu / hits * 1e6 if hits else float("nan"),
        "cores": cpu / elapsed,
        "pod_process_cores": (tree_cpu(pods.process.pid) - pods0) / elapsed,
    }


CLIENT = """
import asyncio, json, random, sys, time
import grpc
from datalayer.v1 import datalayer_pb2 as pb, datalayer_pb2_grpc as pb_grpc
target, seconds, names = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
async def main():
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(4)]
    stubs = [pb_grpc.DataLayerStub(c) for c in channels]
    calls = 0
    end = time.monotonic() + seconds
    async def caller(stub):
        nonlocal calls
        while time.monotonic() < end:
            await stub.GetEndpoint(pb.GetEndpointRequest(name=random.choice(names)))
            calls += 1
    await asyncio.gather(*(caller(stubs[i % 4]) for i in range(16)))
    print(json.dumps({"calls": calls, "seconds": seconds}))
asyncio.run(main())
"""


async def measure_unary(target: str, names: list[str], seconds: float) -> float:
    clients = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CLIENT,
            target,
            str(seconds),
            json.dumps(names),
            stdout=asyncio.subprocess.PIPE,
            cwd=str(ROOT),
        )
        for _ in range(2)
    ]
    total = 0.0
    for client in clients:
        out, _ = await client.communicate()
        result = json.loads(out)
        total += result["calls"] / result["seconds"]
    return total


async def endpoint_bytes(target: str) -> float:
    found = await listing(target)
    assert found
    return sum(len(e.SerializeToString()) for e in found) / len(found)


async def failover_times(tmp: Path, kills: int) -> list[float]:
    count, interval, staleness = 30, 0.1, 1.0
    times: list[float] = []
    async with pod_process(count) as pods:
        endpoints = tmp / "fo-endpoints.yaml"
        write_endpoints(endpoints, pods)
        ports = [free_port() for _ in range(3)]
        peers = [f"127.0.0.1:{p}" for p in ports]
        replicas = []
        for port, peer in zip(ports, peers, strict=True):
            cluster = "cluster: " + json.dumps({"self": peer, "peers": peers}) + "\n"
            config = tmp / f"fo-{port}.yaml"
            config.write_text(config_text(endpoints, interval, staleness, cluster))
            replicas.append(Replica(config, port, extra=["--log-level", "warning"]))
        await asyncio.gather(*(r.start() for r in replicas))
        try:
            for kill in range(kills):
                for replica in replicas:
                    await wait_fresh(replica.target, count)
                await asyncio.sleep(1.0)  # settled: handoffs done
                victim = replicas[kill % 3]
                survivors = [r for r in replicas if r is not victim]
                owners = {r.target for r in survivors}
                await victim.kill()
                start = time.monotonic()
                while True:
                    views = [await listing(r.target) for r in survivors]
                    if all(
                        v is not None
                        and len(v) == count
                        and all(not e.stale and e.owner in owners for e in v)
                        for v in views
                    ):
                        break
                    await asyncio.sleep(0.02)
                times.append(time.monotonic() - start)
                await victim.start()
        finally:
            await asyncio.gather(*(r.stop() for r in replicas))
    return times


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-cluster-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    seconds = 4.0 if args.quick else 10.0
    results: dict[str, Any] = {"static": {}, "churn": {}}
    for pages in ("static", "churn"):
        async with pod_process(args.pods, churn=pages == "churn") as pods:
            names = sorted(pods.ports)
            for workers in (1, 2):
                process, target = await start_instance(tmp, pods, workers, args.interval)
                try:
                    scrape = await measure_scrapes(pods, process, seconds)
                    if pages == "static":
                        scrape["getendpoint_per_s"] = await measure_unary(
                            target, names, seconds / 2
                        )
                    scrape["endpoint_bytes"] = await endpoint_bytes(target)
                    results[pages][workers] = scrape
                finally:
                    await stop_process(process)
    results["failover_s"] = await failover_times(tmp, 3 if args.quick else 10)
    return results


def paper(one: dict[str, float], two: dict[str, float]) -> list[list[Any]]:
    """Cores per replica for 10,000 endpoints @ 50 ms, from the measured costs."""
    scrape_us = one["cpu_us_per_scrape"]
    # Two workers: each scrape is also relayed once (to the other worker) under churn.
    relay_us = max(two["cpu_us_per_scrape"] - scrape_us, 0.0)
    rate = 10_000 / 0.05
    rows = []
    for members in (1, 2, 4, 8, 16, 32):
        own = rate / members
        relayed_in = rate - own
        cores = (own * scrape_us + relayed_in * relay_us) / 1e6
        out_mbit = own * (members - 1) * two["endpoint_bytes"] * 8 / 1e6
        in_mbit = relayed_in * two["endpoint_bytes"] * 8 / 1e6
        rows.append([members, own, cores, in_mbit, out_mbit])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    nominal = args.pods / args.interval
    static1, static2 = results["static"][1], results["static"][2]
    one, two = results["churn"][1], results["churn"][2]

    def row(label: str, key: str, a: dict[str, float], b: dict[str, float]) -> list[Any]:
        return [label, a[key], b[key], b[key] / a[key]]

    print_table(
        f"{args.pods} pods @ {args.interval * 1000:g} ms, static pages (a scrape reading the "
        "same values commits nothing: nothing to relay), 1 worker vs 2",
        ["", "1 worker", "2 workers", "2 / 1"],
        [
            row("scrapes/s", "scrapes_per_s", static1, static2),
            row("CPU µs per scrape (whole instance)", "cpu_us_per_scrape", static1, static2),
            row("GetEndpoint/s (2 client processes)", "getendpoint_per_s", static1, static2),
        ],
    )
    print_table(
        f"{args.pods} pods @ {args.interval * 1000:g} ms, churn (every scrape changes the "
        "gauges: a commit, relayed to the other worker), 1 worker vs 2",
        ["", "1 worker", "2 workers", "2 / 1"],
        [
            [
                "scrapes/s",
                one["scrapes_per_s"],
                two["scrapes_per_s"],
                two["scrapes_per_s"] / one["scrapes_per_s"],
            ],
            [
                "% of nominal",
                100 * one["scrapes_per_s"] / nominal,
                100 * two["scrapes_per_s"] / nominal,
                "",
            ],
            [
                "CPU µs per scrape (whole instance)",
                one["cpu_us_per_scrape"],
                two["cpu_us_per_scrape"],
                two["cpu_us_per_scrape"] / one["cpu_us_per_scrape"],
            ],
            ["instance cores", one["cores"], two["cores"], two["cores"] / one["cores"]],
            ["pods' process cores", one["pod_process_cores"], two["pod_process_cores"], ""],
        ],
    )
    times = results["failover_s"]
    print_table(
        f"Failover: kill -9 one of 3 replicas → all 30 endpoints fresh on both survivors "
        f"(grace = staleness = 1 s), {len(times)} kills",
        ["p50 s", "p99 s", "max s", "p50 / grace"],
        [
            [
                percentile(times, 0.5),
                percentile(times, 0.99),
                max(times),
                percentile(times, 0.5) / 1.0,
            ]
        ],
    )
    print_table(
        "On paper: 10,000 endpoints @ 50 ms (200,000 scrapes/s), every scrape a change "
        f"(worst case); scrape {one['cpu_us_per_scrape']:.0f} µs, relayed update "
        f"{max(two['cpu_us_per_scrape'] - one['cpu_us_per_scrape'], 0):.0f} µs, "
        f"{two['endpoint_bytes']:.0f} B per update",
        ["replicas", "own scrapes/s each", "cores each", "relay in Mbit/s", "relay out Mbit/s"],
        paper(one, two),
    )
    path = write_json("cluster", results)
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
