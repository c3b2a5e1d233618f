"""The service end to end in one process: mock pods, the collector, gRPC and the client, all
over real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from datalayer.client import DataLayerClient
from datalayer.config import load_config_text
from datalayer.model import EndpointSpec
from datalayer.plugin import Discovery, DiscoverySink
from datalayer.registry import default_registry
from datalayer.v1 import datalayer_pb2 as pb
from mockpod.server import start_pods
from server.app import DataLayerApp, ServeOptions

from stack import DEFAULT_PODS, STACK_CONFIG, Stack, eventually


async def fresh(stack: Stack, name: str) -> pb.Endpoint:
    endpoint = await stack.client.get_endpoint(name)
    return endpoint


async def test_get_endpoint_reports_what_the_pod_was_told(stack: Stack) -> None:
    await stack.control(
        1,
        {
            "waiting": 5,
            "running": 3,
            "kv_cache_usage": 0.42,
            "running_lora": ["sql-lora"],
            "waiting_lora": ["chat-lora"],
        },
    )

    async def told() -> bool:
        m = (await fresh(stack, "pod-b")).metrics
        return (m.waiting_queue_size, m.running_requests_size) == (5, 3)

    await eventually(told, what="pod-b to report the values it was told")
    endpoint = await fresh(stack, "pod-b")
    m = endpoint.metrics
    assert m.kv_cache_usage_percent == pytest.approx(0.42)
    assert list(m.active_models) == ["sql-lora"]
    assert list(m.waiting_models) == ["chat-lora"]
    assert m.max_active_models == 2
    assert m.cache_block_size == 16
    assert m.cache_num_blocks == 8192
    assert not endpoint.stale
    assert endpoint.last_error == ""
    assert (endpoint.address, endpoint.port) == ("127.0.0.1", stack.pods[1].port)
    assert dict(endpoint.labels) == {
        "app": "vllm",
        "pod": "pod-b",
        "llm-d.ai/engine-type": "vllm",
    }
    assert endpoint.metrics.update_time.seconds > 0


async def test_data_parallel_pod_is_summed_and_averaged(stack: Stack) -> None:
    await stack.control(2, {"waiting": [2, 5], "running": [1, 1], "kv_cache_usage": [0.2, 0.6]})

    async def summed() -> bool:
        m = (await fresh(stack, "pod-c")).metrics
        return m.waiting_queue_size == 7 and m.running_requests_size == 2

    await eventually(summed, what="pod-c's two engines to be summed")
    assert (await fresh(stack, "pod-c")).metrics.kv_cache_usage_percent == pytest.approx(0.4)


async def test_watch_added_synced_updated_removed(stack: Stack) -> None:
    responses: list[pb.WatchResponse] = []
    stream = stack.client.watch(selector="app=vllm")

    async def next_response() -> pb.WatchResponse:
        response = await asyncio.wait_for(anext(stream), timeout=5)
        responses.append(response)
        return response

    first = await next_response()
    assert first.synced
    assert first.full_snapshot
    assert first.instance_id
    assert sorted(e.endpoint.name for e in first.events) == ["pod-a", "pod-b", "pod-c"]
    assert {e.type for e in first.events} == {pb.WatchEvent.ADDED}

    await stack.control(0, {"waiting": 11})
    while True:
        response = await next_response()
        updated = [e for e in response.events if e.endpoint.name == "pod-a"]
        if updated and updated[-1].endpoint.metrics.waiting_queue_size == 11:
            assert updated[-1].type == pb.WatchEvent.UPDATED
            break

    stack.write_endpoints(["pod-b", "pod-c"])
    while True:
        response = await next_response()
        removed = [e for e in response.events if e.type == pb.WatchEvent.REMOVED]
        if removed:
            assert [e.endpoint.name for e in removed] == ["pod-a"]
            break
    revisions = [r.revision for r in responses]
    assert revisions == sorted(revisions)
    await stream.aclose()


async def test_stopped_pod_turns_stale_and_others_stay_fresh(stack: Stack) -> None:
    async def all_fresh() -> bool:
        listing = await stack.client.list_endpoints()
        return len(listing.endpoints) == 3 and not any(e.stale for e in listing.endpoints)

    await eventually(all_fresh, what="all pods fresh")
    await stack.pods[0].close()

    async def a_stale() -> bool:
        return (await fresh(stack, "pod-a")).stale

    await eventually(a_stale, what="pod-a to turn stale")
    endpoint = await fresh(stack, "pod-a")
    assert "ClientConnectorError" in endpoint.last_error or "Connect" in endpoint.last_error
    for name in ("pod-b", "pod-c"):
        other = await fresh(stack, name)
        assert not other.stale, other.last_error
        assert other.last_error == ""


async def test_list_endpoints_filters_and_reports_revision(stack: Stack) -> None:
    async def three() -> bool:
        return len((await stack.client.list_endpoints()).endpoints) == 3

    await eventually(three, what="three endpoints")
    listing = await stack.client.list_endpoints("pod in (pod-a, pod-c)")
    assert sorted(e.name for e in listing.endpoints) == ["pod-a", "pod-c"]
    assert listing.revision >= max(e.revision for e in listing.endpoints)
    assert listing.instance_id == stack.app.store.instance_id


async def _drain(stream: AsyncIterator[pb.WatchResponse]) -> None:
    async for _ in stream:
        pass


BAD_REQUESTS: dict[str, Callable[[DataLayerClient], Awaitable[object]]] = {
    "get-unknown": lambda c: c.get_endpoint("nope"),
    "get-empty": lambda c: c.get_endpoint(""),
    "list-bad-selector": lambda c: c.list_endpoints("app in (x"),
    "watch-bad-selector": lambda c: _drain(c.watch(selector="=x")),
    "watch-empty-name": lambda c: _drain(c.watch(names=["a", ""])),
    "watch-fast-heartbeat": lambda c: _drain(c.watch(heartbeat_interval=0.001)),
    "watch-negative-interval": lambda c: _drain(c.watch(min_interval=-1)),
}


@pytest.mark.parametrize(
    ("call", "code", "fragment"),
    [
        ("get-unknown", grpc.StatusCode.NOT_FOUND, "endpoint 'nope' not found"),
        ("get-empty", grpc.StatusCode.INVALID_ARGUMENT, "name: must not be empty"),
        ("list-bad-selector", grpc.StatusCode.INVALID_ARGUMENT, "selector: label selector"),
        ("watch-bad-selector", grpc.StatusCode.INVALID_ARGUMENT, "selector: label selector"),
        ("watch-empty-name", grpc.StatusCode.INVALID_ARGUMENT, "names[1]: must not be empty"),
        ("watch-fast-heartbeat", grpc.StatusCode.INVALID_ARGUMENT, "heartbeat_interval"),
        ("watch-negative-interval", grpc.StatusCode.INVALID_ARGUMENT, "min_interval: must not"),
    ],
)
async def test_bad_requests_get_the_right_status(
    stack: Stack, call: str, code: grpc.StatusCode, fragment: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await BAD_REQUESTS[call](stack.client)
    assert info.value.code() == code
    assert fragment in (info.value.details() or "")


async def test_health_serves_after_discovery_and_reflection_lists_services(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.app.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def serving() -> bool:
            reply = await health.Check(
                health_pb2.HealthCheckRequest(service="datalayer.v1.DataLayer")
            )
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        await eventually(serving, what="health SERVING")
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [r async for r in stub.ServerReflectionInfo(iter([request]))]
        names = {s.name for s in replies[0].list_services_response.service}
        assert {"datalayer.v1.DataLayer", "grpc.health.v1.Health"} <= names


async def test_self_metrics_are_exposed(stack: Stack) -> None:
    async def scraped() -> bool:
        listing = await stack.client.list_endpoints()
        return sum(not e.stale for e in listing.endpoints) == 3

    await eventually(scraped, what="three fresh endpoints")
    url = f"http://127.0.0.1:{stack.app.metrics_port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    assert 'datalayer_scrape_duration_seconds_count{source_type="metrics-data-source"}' in text
    assert 'datalayer_endpoints{state="fresh"} 3.0' in text
    assert "datalayer_subscribers 0.0" in text


async def test_mirror_converges_to_the_list(stack: Stack) -> None:
    async with stack.client.mirror(selector="app=vllm") as mirror:
        await asyncio.wait_for(mirror.synced.wait(), timeout=5)
        await stack.control(2, {"running": 4})
        stack.write_endpoints(["pod-b", "pod-c"])

        def converged(m: object) -> bool:
            endpoints = mirror.endpoints
            return (
                sorted(endpoints) == ["pod-b", "pod-c"]
                and endpoints["pod-c"].metrics.running_requests_size == 4
            )

        await asyncio.wait_for(mirror.wait_for(converged), timeout=5)
        listing = await stack.client.list_endpoints("app=vllm")
        assert sorted(mirror.endpoints) == sorted(e.name for e in listing.endpoints)


class GatedDiscovery(Discovery):
    """Reports its endpoints one at a time and syncs only when the test opens `gate`: the
    window right after start (or a reload) where a store holds a partial fleet."""

    type_name = "gated-discovery-for-tests"
    Parameters = dict

    def __init__(self, specs: list[EndpointSpec]) -> None:
        super().__init__("gated", {})
        self.specs = specs
        self.gate = asyncio.Event()

    async def run(self, sink: DiscoverySink) -> None:
        await sink.upsert(self.specs[0])
        await self.gate.wait()
        for spec in self.specs[1:]:
            await sink.upsert(spec)
        sink.mark_synced()
        await asyncio.Event().wait()


async def test_watch_opened_before_discovery_synced_waits_for_the_whole_fleet(
    tmp_path: Path,
) -> None:
    """A mirror reconnecting right after a restart must not get SYNCED with 1 of 3 endpoints
    (it would drop the other two from its view): the stream waits for the discovery sync."""
    pods = await start_pods(DEFAULT_PODS)
    config = load_config_text(
        STACK_CONFIG.format(endpoints=tmp_path / "unused.yaml"), default_registry(), file="s.yaml"
    )
    discovery = GatedDiscovery(
        [
            EndpointSpec(pod.spec.name, "127.0.0.1", pod.port, "", {"app": "vllm"})
            for pod in pods.pods
        ]
    )
    config.discoveries = [discovery]
    app = DataLayerApp(config, ServeOptions(grpc_host="127.0.0.1", grpc_port=0, metrics_port=None))
    await app.start()
    try:
        async with DataLayerClient(f"127.0.0.1:{app.grpc_port}") as client:

            async def one_known() -> bool:
                return len((await client.list_endpoints()).endpoints) == 1

            await eventually(one_known, what="the first endpoint in the store")
            stream = client.watch(selector="app=vllm")
            first = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(0.3)
            assert not first.done(), "initial state sent before discovery synced"
            discovery.gate.set()
            response = await asyncio.wait_for(first, 5)
            assert response.synced
            assert response.full_snapshot
            assert sorted(e.endpoint.name for e in response.events) == ["pod-a", "pod-b", "pod-c"]
            await stream.aclose()
    finally:
        await app.stop()
        await pods.close()
