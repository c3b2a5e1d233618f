"""What the service answers to bad input, over a real socket: the right status, a short
message, at most one log line; and resumes and subscriptions it cannot honour as asked."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from google.protobuf import duration_pb2

from datalayer.hub import Hub
from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.store import EndpointStore
from datalayer.v1 import datalayer_pb2 as pb
from datalayer.v1 import datalayer_pb2_grpc as pb_grpc
from server.service import DataLayerService, add_to_server


def small_store() -> EndpointStore:
    store = EndpointStore()
    for name in ("a", "b"):
        store.upsert(EndpointSpec(name, "127.0.0.1", 8000, "", {"app": "vllm"}))
    update = EndpointUpdate()
    update.set_attribute("/v1/models", [{"id": "m"}])
    store.apply("a", update, 1.0)
    return store


@asynccontextmanager
async def serving(
    store: EndpointStore, declared: frozenset[str] = frozenset()
) -> AsyncIterator[grpc.aio.Channel]:
    hub = Hub(store, batch_window=0.001)
    server = grpc.aio.server()
    add_to_server(DataLayerService(store, hub, attribute_keys=lambda: declared), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        hub.close()
        await server.stop(0)


async def first_watch_error(
    channel: grpc.aio.Channel, request: pb.Subscription
) -> grpc.aio.AioRpcError:
    call = pb_grpc.DataLayerStub(channel).Watch(request)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await asyncio.wait_for(call.read(), 5)
    return error.value


async def test_a_huge_unknown_name_gets_not_found_with_a_short_message() -> None:
    """A message that repeats a 20 KB name is over the client's 8 KB metadata limit, which
    turns NOT_FOUND into RESOURCE_EXHAUSTED."""
    async with serving(small_store()) as channel:
        stub = pb_grpc.DataLayerStub(channel)
        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.GetEndpoint(pb.GetEndpointRequest(name="x" * 20_000), timeout=5)
        elapsed = time.perf_counter() - started
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        details = error.value.details() or ""
        assert "20000 characters" in details
        assert len(details) < 200
        assert elapsed < 1.0


@pytest.mark.parametrize("method", ["GetEndpoint", "ListEndpoints", "Watch"])
async def test_malformed_request_bytes_are_invalid_argument_and_one_log_line(
    method: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(small_store()) as channel:
        path = f"/datalayer.v1.DataLayer/{method}"
        for _ in range(5):
            if method == "Watch":
                call = channel.unary_stream(path, request_serializer=None)(b"\xff\xff\xff")
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await asyncio.wait_for(call.read(), 5)
            else:
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await channel.unary_unary(path, request_serializer=None)(
                        b"\xff\xff\xff", timeout=5
                    )
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid protobuf message" in (error.value.details() or "")
    records = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(records) <= 1
    assert not any(r.exc_info for r in caplog.records)


@pytest.mark.parametrize(
    ("seconds", "nanos", "why"),
    [
        (1, -500_000_000, "same sign"),
        (-1, 500_000_000, "same sign"),
        (0, 1_000_000_000, "nanos"),
        (2, 2_000_000_000, "nanos"),
        (0, -1_000_000_000, "nanos"),
    ],
)
async def test_durations_outside_the_protobuf_rules_are_refused(
    seconds: int, nanos: int, why: str
) -> None:
    async with serving(small_store()) as channel:
        for field in ("min_interval", "heartbeat_interval"):
            request = pb.Subscription(
                **{field: duration_pb2.Duration(seconds=seconds, nanos=nanos)}
            )
            error = await first_watch_error(channel, request)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (error.details() or "").startswith(f"{field}: ")
            assert why in (error.details() or "")


async def test_an_unknown_attribute_is_refused_naming_the_known_ones() -> None:
    async with serving(small_store(), declared=frozenset({"declared-key"})) as channel:
        error = await first_watch_error(channel, pb.Subscription(attributes=["metrics", "metricz"]))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = error.details() or ""
        assert details.startswith("attributes[1]: unknown part 'metricz'")
        for known in ("'metrics'", "'/v1/models'", "'declared-key'"):
            assert known in details
        huge = await first_watch_error(channel, pb.Subscription(attributes=["k" * 20_000]))
        assert huge.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Known parts: metrics, a key an endpoint holds, a key an extractor declares.
        for attributes in (["metrics"], ["/v1/models"], ["declared-key"]):
            call = pb_grpc.DataLayerStub(channel).Watch(pb.Subscription(attributes=attributes))
            first = await asyncio.wait_for(call.read(), 5)
            assert first.synced, attributes
            call.cancel()


async def test_a_resume_ahead_of_the_server_gets_a_full_snapshot() -> None:
    store = small_store()
    async with serving(store) as channel:
        call = pb_grpc.DataLayerStub(channel).Watch(
            pb.Subscription(
                resume_revision=store.revision + 1000, resume_instance_id=store.instance_id
            )
        )
        first = await asyncio.wait_for(call.read(), 5)
        call.cancel()
    assert first.full_snapshot
    assert first.synced
    assert sorted(e.endpoint.name for e in first.events) == ["a", "b"]
