"""`datalayer serve --workers 2` (issue 13): two worker processes behind one gRPC port
(SO_REUSEPORT), one replica group; one metrics port for the whole instance."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections import Counter
from pathlib import Path

import aiohttp
import grpc
from cluster_stack import (
    CONFIG,
    DATALAYER,
    INTERVAL,
    STALENESS,
    free_port,
    pod_process,
    stop_process,
    write_endpoints,
)

from datalayer.v1 import datalayer_pb2 as pb
from datalayer.v1 import datalayer_pb2_grpc as pb_grpc

from stack import eventually

PODS = 40
CHANNELS = 20


async def list_on_new_channel(target: str) -> pb.ListEndpointsResponse | None:
    """A channel of its own (its own TCP connection, which the kernel gives to a worker)."""
    try:
        # A local subchannel pool: otherwise grpcio shares one connection between channels.
        options = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            stub = pb_grpc.DataLayerStub(channel)
            response: pb.ListEndpointsResponse = await stub.ListEndpoints(
                pb.ListEndpointsRequest(), timeout=2
            )
            return response
    except grpc.aio.AioRpcError:
        return None


async def test_two_workers_share_one_port_and_each_answers_for_all(tmp_path: Path) -> None:
    async with pod_process(PODS) as pods:
        endpoints = tmp_path / "endpoints.yaml"
        write_endpoints(endpoints, pods)
        config = tmp_path / "config.yaml"
        text = CONFIG.format(
            endpoints=endpoints, interval=INTERVAL, staleness=STALENESS, cluster="null"
        )
        config.write_text(text.replace("cluster: null\n", ""))
        grpc_port, metrics_port = free_port(), free_port()
        target = f"127.0.0.1:{grpc_port}"
        log = (tmp_path / "serve.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            DATALAYER,
            "serve",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--grpc-port",
            str(grpc_port),
            "--metrics-port",
            str(metrics_port),
            "--workers",
            "2",
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            listings: list[pb.ListEndpointsResponse] = []

            async def every_channel_sees_all_fresh() -> bool:
                nonlocal listings
                found = await asyncio.gather(
                    *(list_on_new_channel(target) for _ in range(CHANNELS))
                )
                if any(r is None for r in found):
                    return False
                listings = [r for r in found if r is not None]
                return all(
                    len(r.endpoints) == PODS and not any(e.stale for e in r.endpoints)
                    for r in listings
                )

            await eventually(every_channel_sees_all_fresh, timeout=30, what="20 fresh channels")
            # Connections went to both workers (each has its own store instance)...
            assert len({r.instance_id for r in listings}) == 2
            # ...and both agree who owns what: two owners, each within 25 % of half.
            views = [{e.name: e.owner for e in r.endpoints} for r in listings]
            assert all(v == views[0] for v in views)
            shares = Counter(views[0].values())
            assert len(shares) == 2, shares
            assert all(15 <= share <= 25 for share in shares.values()), shares
            before = await pods.hits()
            await asyncio.sleep(10 * INTERVAL)
            after = await pods.hits()
            rates = {n: (after[n] - before[n]) / 10 for n in after}
            assert all(0.6 <= rate <= 1.4 for rate in rates.values()), rates
            # One metrics port for the instance: every worker's series, labelled.
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                text = await response.text()
            # /status.json from a live worker: its group is the two workers.
            status_url = f"http://127.0.0.1:{metrics_port}/status.json"
            async with aiohttp.ClientSession() as session, session.get(status_url) as response:
                cluster = (await response.json())["cluster"]
            assert len(cluster["members"]) == 2
            assert sum(cluster["shares"].values()) == PODS
            assert all(peer["up"] for peer in cluster["peers"])
            for worker in ("0", "1"):
                assert f'datalayer_endpoints{{worker="{worker}",state="fresh"}} {PODS}' in text, (
                    text[:2000]
                )
        finally:
            await stop_process(process)
            log.close()
