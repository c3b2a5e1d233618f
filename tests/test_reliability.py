"""Reliability: slow and dead subscribers, limits, a SIGKILLed server returning, config reloads."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml

from datalayer.client import DataLayerClient
from datalayer.collector import Collector
from datalayer.config import DataLayerConfig
from datalayer.model import EndpointUpdate
from datalayer.v1 import datalayer_pb2 as pb
from datalayer.v1 import datalayer_pb2_grpc as pb_grpc
from mockpod.server import PodGroup, start_pods

from stack import (
    DEFAULT_PODS,
    STACK_CONFIG,
    eventually,
    free_port,
    running_stack,
    write_endpoints_file,
)

DATALAYER = str(Path(sys.executable).with_name("datalayer"))


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_idle_subscribers_cost_bounded_memory_and_get_the_latest_state(
    tmp_path: Path,
) -> None:
    """50 subscribers, 10 of which do not read while 5,000 updates are committed."""
    async with running_stack(tmp_path) as stack:
        store = stack.app.store
        async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.app.grpc_port}") as channel:
            stub = pb_grpc.DataLayerStub(channel)
            idle = [stub.Watch(pb.Subscription(names=["pod-a"])) for _ in range(10)]
            readers = [stub.Watch(pb.Subscription(names=["pod-a"])) for _ in range(40)]
            await eventually(
                lambda: _true(len(stack.app.hub.subscribers) == 50), what="50 subscribers"
            )
            seen: list[int] = [0] * 40

            async def read(i: int, call: AsyncIterator[pb.WatchResponse]) -> None:
                async for response in call:
                    for event in response.events:
                        seen[i] = max(seen[i], event.endpoint.metrics.custom.get("n", 0))

            reader_tasks = [asyncio.create_task(read(i, c)) for i, c in enumerate(readers)]
            rss_before = rss_kib()
            last = 5000
            for n in range(1, last + 1):
                update = EndpointUpdate()
                update.set_custom("n", float(n))
                store.apply("pod-a", update, 1.0)
                if n % 100 == 0:
                    await asyncio.sleep(0.005)
            # Every reading subscriber reaches the last value; the idle ones did not hold it up.
            await eventually(lambda: _true(min(seen) == last), what="readers see the last update")
            assert rss_kib() - rss_before < 20 * 1024
            pending = [len(s.pending) for s in stack.app.hub.subscribers]
            assert max(pending) <= len(store)  # a set of names, never a queue of updates
            # An idle subscriber that starts reading gets the latest state, coalesced.
            values: list[float] = []
            async for response in idle[0]:
                values += [e.endpoint.metrics.custom.get("n", 0) for e in response.events]
                if values and values[-1] == last:
                    break
            # Coalesced: what reached the idle stream (within gRPC's flow-control window) is a
            # small fraction of the 5,000 commits, and it ends with the latest state.
            assert len(values) < last / 20
            # Abrupt disconnects: nothing is left behind.
            for call in idle + readers:
                call.cancel()
            await asyncio.gather(*reader_tasks, return_exceptions=True)
            await eventually(
                lambda: _true(not stack.app.hub.subscribers), what="subscribers released"
            )


async def _true(value: bool) -> bool:
    return value


async def test_subscriber_limit_and_oversized_requests(tmp_path: Path) -> None:
    async with running_stack(tmp_path, max_subscribers=2) as stack:
        client = stack.client
        first, second = client.watch(), client.watch()
        await anext(first)
        await anext(second)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await anext(client.watch())
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "too many subscribers (limit 2)" in (info.value.details() or "")
        await first.aclose()
        await second.aclose()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.get_endpoint("x" * (2 << 20))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_endpoint_limit_refuses_extra_endpoints(tmp_path: Path) -> None:
    async with running_stack(tmp_path, max_endpoints=2) as stack:
        await eventually(lambda: _true(len(stack.app.store) == 2), what="two endpoints")
        await asyncio.sleep(0.2)
        assert len(stack.app.store) == 2


CONFIG = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
- type: core-metrics-extractor
EXTRA
- type: file-discovery
  parameters: {path: ENDPOINTS, pollInterval: 50ms}
dataLayer:
  interval: 50ms
  stalenessThreshold: 500ms
  sources:
  - pluginRef: metrics-data-source
    extractors: [{pluginRef: core-metrics-extractor}EXTRAREF]
  discovery: {pluginRef: file-discovery}
"""


def config_text(endpoints: Path, extra: bool = False) -> str:
    text = CONFIG.replace("ENDPOINTS", str(endpoints))
    if extra:
        return text.replace(
            "EXTRA\n",
            "- type: prometheus-metric\n  parameters: {metricName: 'vllm:num_requests_running'}\n",
        ).replace("EXTRAREF", ", {pluginRef: prometheus-metric}")
    return text.replace("EXTRA\n", "").replace("EXTRAREF", "")


def start_server(config: Path, port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [
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
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return process


async def read_log_until(process: subprocess.Popen[str], pattern: str, timeout: float = 15) -> str:
    assert process.stderr is not None
    stream = process.stderr

    def scan() -> str:
        lines = []
        for line in stream:
            lines.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError("server ended; it logged:\n" + "".join(lines))

    return await asyncio.wait_for(asyncio.to_thread(scan), timeout)


@dataclass
class ServedProcess:
    """`datalayer serve` in its own process on mock pods; `server` may be replaced (restarts)."""

    pods: PodGroup
    endpoints: Path
    config: Path
    port: int
    server: subprocess.Popen[str]


@contextlib.asynccontextmanager
async def served_process(tmp_path: Path) -> AsyncIterator[ServedProcess]:
    pods = await start_pods(DEFAULT_PODS)
    endpoints = tmp_path / "endpoints.yaml"
    write_endpoints_file(endpoints, pods)
    config = tmp_path / "config.yaml"
    config.write_text(config_text(endpoints))
    port = free_port()
    served = ServedProcess(pods, endpoints, config, port, start_server(config, port))
    try:
        await read_log_until(served.server, "health is SERVING")
        yield served
    finally:
        served.server.kill()
        served.server.wait(10)
        await pods.close()


async def test_sigkilled_server_restarts_and_mirrors_converge(tmp_path: Path) -> None:
    async with served_process(tmp_path) as served:
        pods, endpoints, port = served.pods, served.endpoints, served.port
        async with DataLayerClient(f"127.0.0.1:{port}") as client:
            mirrors = [client.mirror(selector="app=vllm") for _ in range(3)]
            for mirror in mirrors:
                mirror.backoff_initial = 0.05
                mirror.start()
            for mirror in mirrors:
                await asyncio.wait_for(mirror.synced.wait(), 10)
                assert sorted(mirror.endpoints) == ["pod-a", "pod-b", "pod-c"]
            first_instance = mirrors[0].instance_id

            served.server.send_signal(signal.SIGKILL)
            served.server.wait(10)
            write_endpoints_file(endpoints, pods, ["pod-b", "pod-c"])  # removed while down
            served.server = start_server(served.config, port)
            await read_log_until(served.server, "health is SERVING")

            for mirror in mirrors:
                await asyncio.wait_for(
                    mirror.wait_for(lambda m: sorted(m.endpoints) == ["pod-b", "pod-c"]), 15
                )
                assert mirror.instance_id != first_instance
                assert mirror.reconnects >= 1
            listing = await client.list_endpoints("app=vllm")
            assert sorted(e.name for e in listing.endpoints) == ["pod-b", "pod-c"]
            for mirror in mirrors:
                await mirror.stop()


async def test_reload_refuses_a_bad_config_and_applies_a_good_one(tmp_path: Path) -> None:
    async with served_process(tmp_path) as served:
        pods, endpoints, config, port = served.pods, served.endpoints, served.config, served.port
        server = served.server
        async with DataLayerClient(f"127.0.0.1:{port}") as client:
            config.write_text(config_text(endpoints).replace("interval: 50ms", "interval: soon"))
            server.send_signal(signal.SIGHUP)
            line = await read_log_until(server, "reload refused")
            assert f"{config}:" in line
            assert "dataLayer.interval" in line
            assert len((await client.list_endpoints()).endpoints) == 3  # still serving

            config.write_text(config_text(endpoints, extra=True))
            write_endpoints_file(endpoints, pods, ["pod-a"])
            server.send_signal(signal.SIGHUP)
            await read_log_until(server, "configuration reloaded")

            async def applied() -> bool:
                listing = await client.list_endpoints()
                names = [e.name for e in listing.endpoints]
                custom = listing.endpoints[0].metrics.custom if names == ["pod-a"] else {}
                return "vllm:num_requests_running" in custom

            await eventually(applied, timeout=10, what="the reloaded config in effect")


RELOAD_RACE_CONFIG = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
- type: core-metrics-extractor
- type: models-data-source
- type: models-data-extractor
- type: file-discovery
  parameters: {path: ENDPOINTS, pollInterval: 50ms}
dataLayer:
  interval: 500ms
  sources:
  - pluginRef: metrics-data-source
    extractors: [{pluginRef: core-metrics-extractor}]
  - pluginRef: models-data-source
    interval: 500ms
    extractors: [{pluginRef: models-data-extractor}]
  discovery: {pluginRef: file-discovery}
"""


class ScrapeCounter:
    """Counts the scrapes a real mock pod answers (each scrape renders its page once)."""

    def __init__(self, pods: PodGroup, index: int = 0) -> None:
        self.count = 0
        metrics = pods[index].state.metrics
        render = metrics.render

        def counting_render() -> bytes:
            self.count += 1
            return render()

        metrics.render = counting_render  # type: ignore[method-assign]

    async def rate(self, seconds: float) -> float:
        """Scrapes per second over the next `seconds`."""
        start = self.count
        await asyncio.sleep(seconds)
        return (self.count - start) / seconds


def drain_log(process: subprocess.Popen[str]) -> list[str]:
    """Keep reading the server's stderr in a thread (a full pipe would stall it); the lines."""
    import threading

    lines: list[str] = []
    stream = process.stderr
    assert stream is not None
    threading.Thread(target=lambda: lines.extend(stream), daemon=True).start()
    return lines


async def test_sighup_pairs_leave_exactly_one_collector_running(tmp_path: Path) -> None:
    """Two SIGHUPs 1-80 ms apart used to run two reloads at once: each closed the same old
    collector and started its own new one, so one new collector (and its discovery) kept
    polling unseen and the pods were scraped twice as often, more with every pair."""
    async with served_process(tmp_path) as served:
        counter = ScrapeCounter(served.pods)
        log_lines = drain_log(served.server)
        # 200 endpoints (all on pod-a) polled every 500 ms: a reload has real work to do.
        pod = served.pods[0]
        many = [{"name": f"ep-{i}", "address": "127.0.0.1", "port": pod.port} for i in range(200)]
        served.endpoints.write_text(yaml.safe_dump({"endpoints": many}))
        served.config.write_text(RELOAD_RACE_CONFIG.replace("ENDPOINTS", str(served.endpoints)))
        served.server.send_signal(signal.SIGHUP)
        await eventually(
            lambda: _true(any("configuration reloaded" in line for line in log_lines)),
            timeout=10,
            what="the first reload",
        )
        log_lines.clear()
        await asyncio.sleep(1.5)
        baseline = await counter.rate(2.0)
        assert baseline > 100, f"the pod is not being scraped ({baseline}/s)"
        # Milliseconds between the two SIGHUPs of each pair (the tight ones race most often).
        gaps = (1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6, 8, 10, 15, 20, 30, 40, 50, 60, 70, 80)
        pairs = len(gaps)
        for gap in gaps:
            served.server.send_signal(signal.SIGHUP)
            await asyncio.sleep(gap / 1000)
            served.server.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.15)
        await eventually(
            lambda: _true(any("configuration reloaded" in line for line in log_lines)),
            timeout=10,
            what="a reload",
        )
        await asyncio.sleep(1.0)  # the last coalesced reload, and new lanes settling
        after = await counter.rate(2.0)
        print(f"scrapes/s: {baseline:.1f} before, {after:.1f} after {pairs} SIGHUP pairs")
        assert after < 1.5 * baseline, f"{after / baseline:.1f}x the scrape rate"
        assert served.server.poll() is None
        assert not [line for line in log_lines if "Traceback" in line]


async def test_concurrent_reloads_are_serialized(tmp_path: Path) -> None:
    """The deterministic form of the SIGHUP race: reloads awaited together. Each must close
    the collector and discovery it replaced: one collector with lanes, one discovery task."""
    from datalayer.config import load_config_text
    from datalayer.registry import default_registry

    async with running_stack(tmp_path) as stack:
        app = stack.app
        made = [app.collector]
        new_collector = app._new_collector

        def recording(config: DataLayerConfig) -> Collector:
            collector = new_collector(config)
            made.append(collector)
            return collector

        app._new_collector = recording  # type: ignore[method-assign]
        await eventually(lambda: _true(len(app.store) == 3), what="three endpoints")

        def fresh() -> DataLayerConfig:
            text = STACK_CONFIG.format(endpoints=stack.endpoints_file)
            return load_config_text(text, default_registry(), file="stack.yaml")

        await asyncio.gather(*(app.reload(fresh()) for _ in range(3)))
        await eventually(lambda: _true(app.collector.task_count() > 0), what="new lanes")
        running = [c for c in made if c.task_count() > 0]
        assert running == [app.collector], f"{len(running)} collectors running"
        assert len(made) == 4
        discoveries = [t for t in asyncio.all_tasks() if t.get_name() == "discovery"]
        assert len(discoveries) == 1, f"{len(discoveries)} discovery tasks running"
