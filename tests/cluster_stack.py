"""Replica groups for tests: real `datalayer serve` processes on 127.0.0.1, pods in a
process of their own (tests/cluster_pods.py), file discovery shared by every replica."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

from datalayer.client import DataLayerClient
from datalayer.v1 import datalayer_pb2 as pb

from stack import free_port

DATALAYER = str(Path(sys.executable).with_name("datalayer"))
PODS_SCRIPT = str(Path(__file__).with_name("cluster_pods.py"))
#: Slow enough that 60 pods and 3 replicas share 2 cores with the test; 5 polls per threshold.
INTERVAL = 0.2
STALENESS = 1.0

CONFIG = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
  parameters: {{}}
- type: core-metrics-extractor
  parameters: {{}}
- type: file-discovery
  parameters: {{path: {endpoints}, pollInterval: 100ms}}
dataLayer:
  interval: {interval}s
  timeout: 500ms
  stalenessThreshold: {staleness}s
  sources:
  - pluginRef: metrics-data-source
    extractors: [{{pluginRef: core-metrics-extractor}}]
  discovery: {{pluginRef: file-discovery}}
cluster: {cluster}
"""


@dataclass
class Pods:
    """The pods' process: their ports by name, and the scrape counts it reports."""

    process: asyncio.subprocess.Process
    ports: dict[str, int]
    hits_port: int

    async def hits(self) -> dict[str, int]:
        url = f"http://127.0.0.1:{self.hits_port}/hits"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            counts: dict[str, int] = await response.json()
        return {name: counts.get(name, 0) for name in self.ports}


@contextlib.asynccontextmanager
async def pod_process(count: int, churn: bool = False) -> AsyncIterator[Pods]:
    """`churn`: the pods' gauges change on every scrape (every scrape is a commit)."""
    flags = ["--churn"] if churn else []
    process = await asyncio.create_subprocess_exec(
        sys.executable, PODS_SCRIPT, "--count", str(count), *flags, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        info = json.loads(line)
        yield Pods(process, info["pods"], info["hits"])
    finally:
        await stop_process(process)


async def stop_process(process: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


def write_endpoints(path: Path, pods: Pods) -> None:
    entries = [
        {"name": name, "address": "127.0.0.1", "port": port, "labels": {"app": "vllm"}}
        for name, port in sorted(pods.ports.items())
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"endpoints": entries}))
    tmp.replace(path)


@dataclass
class Replica:
    """One `datalayer serve` of the group; `start` again after `kill` is a restart."""

    config: Path
    port: int
    host: str = "127.0.0.1"
    extra: list[str] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        log = self.config.with_suffix(f".{self.port}.log").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            DATALAYER,
            "serve",
            "--config",
            str(self.config),
            "--host",
            self.host,
            "--grpc-port",
            str(self.port),
            "--metrics-port",
            "-1",
            *self.extra,
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()

    async def kill(self) -> None:
        """kill -9: no goodbye to its peers or clients."""
        if self.process is not None:
            await stop_process(self.process, signal.SIGKILL)
            self.process = None

    async def stop(self) -> None:
        if self.process is not None:
            await stop_process(self.process)
            self.process = None

    async def listing(self) -> list[pb.Endpoint]:
        async with DataLayerClient(self.target) as client:
            return list((await client.list_endpoints(timeout=2.0)).endpoints)


def group_config(
    tmp_path: Path, endpoints: Path, cluster: dict[str, object], name: str = "config"
) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        CONFIG.format(
            endpoints=endpoints,
            interval=INTERVAL,
            staleness=STALENESS,
            cluster=json.dumps(cluster),
        )
    )
    return path


@contextlib.asynccontextmanager
async def replica_group(tmp_path: Path, pods: Pods, size: int) -> AsyncIterator[list[Replica]]:
    """`size` replicas on static peers, each with its own config naming itself."""
    endpoints = tmp_path / "endpoints.yaml"
    write_endpoints(endpoints, pods)
    ports = [free_port() for _ in range(size)]
    peers = [f"127.0.0.1:{port}" for port in ports]
    replicas = [
        Replica(group_config(tmp_path, endpoints, {"self": peer, "peers": peers}, f"r{i}"), port)
        for i, (port, peer) in enumerate(zip(ports, peers, strict=True))
    ]
    try:
        await asyncio.gather(*(r.start() for r in replicas))
        yield replicas
    finally:
        await asyncio.gather(*(r.stop() for r in replicas))


async def all_fresh(replica: Replica, count: int) -> bool:
    try:
        endpoints = await replica.listing()
    except Exception:
        return False
    return len(endpoints) == count and not any(e.stale for e in endpoints)
