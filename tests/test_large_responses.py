"""Responses stay under the 4 MiB every gRPC client accepts by default, however large the
fleet: ListEndpoints pages, a Watch snapshot or batch is split over several messages. All
over real sockets, with clients built with their default limits."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from datalayer.client import DataLayerClient
from datalayer.hub import Hub
from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.store import EndpointStore
from datalayer.v1 import datalayer_pb2 as pb
from datalayer.v1 import datalayer_pb2_grpc as pb_grpc
from server.convert import endpoint_to_proto
from server.service import DataLayerService, ServiceLimits, add_to_server

DATALAYER = str(Path(sys.executable).with_name("datalayer"))
DEFAULT_CLIENT_LIMIT = 4 * 1024 * 1024
#: 100 endpoints x ~60 KB: about 6 MB in all, half again the default client limit.
ENDPOINTS = 100
BLOB = 60_000


def big_store(count: int = ENDPOINTS) -> EndpointStore:
    store = EndpointStore()
    for i in range(count):
        name = f"pod-{i:03}"
        store.upsert(EndpointSpec(name, "10.0.0.1", 8000 + i, "", {"app": "vllm"}))
        update = EndpointUpdate()
        update.set_metric("waiting_queue_size", i)
        update.set_attribute("blob", chr(ord("a") + i % 26) * BLOB)
        store.apply(name, update, 1.0)
    return store


@asynccontextmanager
async def serving(
    store: EndpointStore, limits: ServiceLimits | None = None
) -> AsyncIterator[tuple[str, Hub]]:
    hub = Hub(store, batch_window=0.001)
    server = grpc.aio.server()
    add_to_server(DataLayerService(store, hub, limits), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", hub
    finally:
        hub.close()
        await server.stop(0)


def total_bytes(store: EndpointStore) -> int:
    return sum(endpoint_to_proto(record).ByteSize() for record in store)


async def test_list_endpoints_pages_below_the_client_limit() -> None:
    store = big_store()
    assert total_bytes(store) > DEFAULT_CLIENT_LIMIT * 1.4
    async with serving(store) as (target, _), grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DataLayerStub(channel)
        first = await stub.ListEndpoints(pb.ListEndpointsRequest(selector="app=vllm"))
        assert first.next_page_token
        assert 0 < len(first.endpoints) < ENDPOINTS
        assert first.ByteSize() <= 3_700_000
        second = await stub.ListEndpoints(
            pb.ListEndpointsRequest(selector="app=vllm", page_token=first.next_page_token)
        )
        assert not second.next_page_token
        assert second.revision == first.revision
        names = [e.name for e in (*first.endpoints, *second.endpoints)]
        assert names == [f"pod-{i:03}" for i in range(ENDPOINTS)]


async def test_page_size_limits_the_count_and_pages_stay_on_one_snapshot() -> None:
    """Changes between pages do not show: every page is from the snapshot the first one
    was cut from, at its revision."""
    store = big_store(10)
    async with serving(store) as (target, _), grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.DataLayerStub(channel)
        first = await stub.ListEndpoints(pb.ListEndpointsRequest(page_size=4))
        assert [e.name for e in first.endpoints] == [f"pod-{i:03}" for i in range(4)]
        store.remove("pod-007")
        bump = EndpointUpdate()
        bump.set_metric("waiting_queue_size", 999)
        store.apply("pod-005", bump, 2.0)
        store.upsert(EndpointSpec("pod-new", "10.0.0.2", 1, "", {}))
        seen = list(first.endpoints)
        token = first.next_page_token
        while token:
            page = await stub.ListEndpoints(pb.ListEndpointsRequest(page_size=4, page_token=token))
            assert page.revision == first.revision
            seen.extend(page.endpoints)
            token = page.next_page_token
        assert [e.name for e in seen] == [f"pod-{i:03}" for i in range(10)]
        assert seen[5].metrics.waiting_queue_size == 5
        # A fresh listing sees the changes.
        fresh = await stub.ListEndpoints(pb.ListEndpointsRequest())
        assert "pod-new" in {e.name for e in fresh.endpoints}
        assert "pod-007" not in {e.name for e in fresh.endpoints}


async def test_bad_expired_and_mismatched_page_tokens() -> None:
    store = big_store(6)
    limits = ServiceLimits(max_list_snapshots=1)
    async with serving(store, limits) as (target, _), grpc.aio.insecure_channel(target) as ch:
        stub = pb_grpc.DataLayerStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.ListEndpoints(pb.ListEndpointsRequest(page_token="x" * 5000))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in (bad.value.details() or "")
        assert len(bad.value.details() or "") < 300
        with pytest.raises(grpc.aio.AioRpcError) as negative:
            await stub.ListEndpoints(pb.ListEndpointsRequest(page_size=-1))
        assert negative.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        first = await stub.ListEndpoints(pb.ListEndpointsRequest(selector="app", page_size=2))
        with pytest.raises(grpc.aio.AioRpcError) as mismatch:
            await stub.ListEndpoints(
                pb.ListEndpointsRequest(selector="app=x", page_token=first.next_page_token)
            )
        assert mismatch.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "selector" in (mismatch.value.details() or "")
        await stub.ListEndpoints(pb.ListEndpointsRequest(page_size=2))  # evicts the first
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await stub.ListEndpoints(
                pb.ListEndpointsRequest(selector="app", page_token=first.next_page_token)
            )
        assert gone.value.code() == grpc.StatusCode.ABORTED
        assert "list again" in (gone.value.details() or "")


async def test_python_client_follows_pages() -> None:
    store = big_store()
    async with serving(store) as (target, _), DataLayerClient(target) as client:
        listing = await client.list_endpoints("app=vllm")
        assert len(listing.endpoints) == ENDPOINTS
        assert listing.revision == store.revision
        assert not listing.next_page_token
        small = await client.list_endpoints(page_size=7)
        assert [e.name for e in small.endpoints] == [e.name for e in listing.endpoints]


async def test_watch_snapshot_is_split_and_a_mirror_syncs() -> None:
    store = big_store()
    async with serving(store) as (target, _), DataLayerClient(target) as client:
        responses: list[pb.WatchResponse] = []
        async for response in client.watch(selector="app=vllm"):
            responses.append(response)
            if response.synced:
                break
        assert len(responses) >= 2
        assert all(r.ByteSize() <= 3_700_000 for r in responses)
        assert [r.synced for r in responses][-1]
        assert not any(r.synced for r in responses[:-1])
        assert sum(len(r.events) for r in responses) == ENDPOINTS
        async with client.mirror(selector="app=vllm") as mirror:
            await asyncio.wait_for(mirror.synced.wait(), 10)
            assert len(mirror.endpoints) == ENDPOINTS
            # A live batch larger than the limit: every endpoint's blob changes at once.
            for i in range(ENDPOINTS):
                update = EndpointUpdate()
                update.set_attribute("blob", "z" * BLOB)
                store.apply(f"pod-{i:03}", update, 2.0)
            await asyncio.wait_for(
                mirror.wait_for(
                    lambda m: all(
                        e.attributes["blob"].text[:1] == "z" for e in m.endpoints.values()
                    )
                ),
                10,
            )
            assert mirror.reconnects == 0


async def test_operator_list_follows_pages() -> None:
    store = big_store()
    async with serving(store) as (target, _):
        process = await asyncio.create_subprocess_exec(
            DATALAYER,
            "list",
            "-s",
            target,
            "--json",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()
        listing = json.loads(stdout)
        assert len(listing["endpoints"]) == ENDPOINTS
        assert "next_page_token" not in listing
        process = await asyncio.create_subprocess_exec(
            DATALAYER, "list", "-s", target, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()
        assert stdout.decode().count("pod-") == ENDPOINTS
