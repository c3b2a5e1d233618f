"""Serialize once: equal Watch batches share one bytes object; the bytes are the messages the
protobuf classes would build; unary replies read through the same exact-keyed cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from datalayer.hub import Batch, Hub, WatchFilter
from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.selector import parse_selector
from datalayer.store import EndpointStore
from datalayer.v1 import datalayer_pb2 as pb
from server.convert import EndpointEncoder, WatchEncoder, batch_to_proto, endpoint_to_proto
from server.service import DataLayerService, add_to_server


def spec(name: str, **labels: str) -> EndpointSpec:
    return EndpointSpec(name, "10.0.0.7", 8000, "default", labels)


def update(waiting: int, models: tuple[str, ...] = ("m",)) -> EndpointUpdate:
    out = EndpointUpdate()
    out.set_metric("waiting_queue_size", waiting)
    out.set_metric("kv_cache_usage_percent", 0.25)
    out.set_custom("running_sum", 3.0)
    out.set_attribute("models", models)
    return out


@pytest.fixture
def store() -> EndpointStore:
    store = EndpointStore()
    for name, app in (("a", "vllm"), ("b", "vllm"), ("c", "sglang")):
        store.upsert(spec(name, app=app))
        store.apply(name, update(1), 100.0)
    return store


async def next_batch(stream: AsyncIterator[Batch]) -> Batch:
    return await asyncio.wait_for(anext(stream), timeout=2)


def decoded(data: list[bytes]) -> pb.WatchResponse:
    """The one response a batch that fits in a message is encoded as."""
    assert len(data) == 1
    return pb.WatchResponse.FromString(data[0])


async def test_same_filter_same_bytes_object_different_filters_their_own(
    store: EndpointStore,
) -> None:
    hub = Hub(store, batch_window=0.001)
    encoder = WatchEncoder(store.instance_id)
    metrics = frozenset({"metrics"})
    filters = {
        "first": WatchFilter(parse_selector("app=vllm"), parts=metrics),
        "same filter": WatchFilter(parse_selector("app=vllm"), parts=metrics),
        "other parts": WatchFilter(parse_selector("app=vllm")),
        "other selector": WatchFilter(parse_selector("app"), parts=metrics),  # also selects c
    }
    parts = {name: f.parts for name, f in filters.items()}
    iters = {name: hub.subscribe(f).batches() for name, f in filters.items()}
    snapshots = {k: encoder.encode(await next_batch(it), parts[k]) for k, it in iters.items()}
    assert snapshots["first"] is snapshots["same filter"]
    assert snapshots["other parts"] != snapshots["first"]
    assert snapshots["other selector"] != snapshots["first"]
    assert len(decoded(snapshots["other selector"]).events) == 3

    store.apply("a", update(7), 101.0)
    sent = {k: encoder.encode(await next_batch(it), parts[k]) for k, it in iters.items()}
    assert sent["first"] is sent["same filter"]
    assert sent["other parts"] is not sent["first"]
    for name, data in sent.items():
        message = decoded(data)
        assert [(e.type, e.endpoint.name) for e in message.events] == [(pb.WatchEvent.UPDATED, "a")]
        endpoint = message.events[0].endpoint
        assert endpoint.metrics.waiting_queue_size == 7
        assert message.instance_id == store.instance_id
        assert message.revision == store.revision
        # The attribute filter decides the attributes sent, for each its own bytes.
        assert ("models" in endpoint.attributes) == (name == "other parts"), name
    # Another selector with the same attribute filter drained the same events: what it is
    # sent is the same message, so it shares the bytes too.
    assert sent["other selector"] is sent["first"]
    assert encoder.built == 3 + 2  # snapshots: 3 distinct; the update: 2 distinct
    assert encoder.reused == 1 + 2


@pytest.mark.parametrize("parts", [frozenset[str](), frozenset({"metrics"}), frozenset({"models"})])
async def test_encoded_bytes_are_the_messages_protobuf_builds(
    store: EndpointStore, parts: frozenset[str]
) -> None:
    hub = Hub(store, batch_window=0.001)
    stream = hub.subscribe(WatchFilter(parts=parts)).batches()
    encoder = WatchEncoder(store.instance_id)
    snapshot = await next_batch(stream)
    assert decoded(encoder.encode(snapshot, parts)) == batch_to_proto(
        snapshot, store.instance_id, parts
    )
    store.apply("b", update(2, ("m", "lora")), 102.0)
    store.remove("c")
    live = await next_batch(stream)
    assert {e.kind.name for e in live.events} == {"UPDATED", "REMOVED"}
    assert decoded(encoder.encode(live, parts)) == batch_to_proto(live, store.instance_id, parts)


async def test_cache_keys_follow_update_times_that_move_without_a_revision(
    store: EndpointStore,
) -> None:
    encoder = EndpointEncoder()
    record = store.get("a")
    assert record is not None
    first = encoder.encode(record)
    assert encoder.encode(record) is first
    revision = store.revision
    store.apply("a", update(1), 200.0)  # same values: no revision, a newer update time
    assert store.revision == revision
    refreshed = pb.Endpoint.FromString(encoder.encode(record))
    assert refreshed == endpoint_to_proto(record)
    assert refreshed.metrics.update_time.seconds == 200
    assert refreshed.attributes["models"].update_time.seconds == 200


async def test_grpc_streams_with_one_filter_receive_identical_bytes(store: EndpointStore) -> None:
    """Over a real server: raw bytes as received by two streams with one filter and a third
    with another; the method is registered with no serializer and still parses everywhere."""
    hub = Hub(store, batch_window=0.001)
    service = DataLayerService(store, hub)
    server = grpc.aio.server()
    add_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = channel.unary_stream(
                "/datalayer.v1.DataLayer/Watch",
                request_serializer=pb.Subscription.SerializeToString,
                response_deserializer=None,  # the raw bytes
            )
            subscriptions = [
                pb.Subscription(selector="app=vllm", attributes=["metrics"]),
                pb.Subscription(selector="app=vllm", attributes=["metrics"]),
                pb.Subscription(selector="app=vllm"),
            ]
            calls = [watch(s) for s in subscriptions]
            for call in calls:
                assert decoded([await call.read()]).synced
            assert len(hub.subscribers) == 3  # each sent its snapshot: all subscribed
            store.apply("b", update(9), 103.0)
            received = [await asyncio.wait_for(call.read(), 2) for call in calls]
            for call in calls:
                call.cancel()
            get = channel.unary_unary(
                "/datalayer.v1.DataLayer/GetEndpoint",
                request_serializer=pb.GetEndpointRequest.SerializeToString,
                response_deserializer=pb.Endpoint.FromString,
            )
            endpoint = await get(pb.GetEndpointRequest(name="b"))
            listing = await channel.unary_unary(
                "/datalayer.v1.DataLayer/ListEndpoints",
                request_serializer=pb.ListEndpointsRequest.SerializeToString,
                response_deserializer=pb.ListEndpointsResponse.FromString,
            )(pb.ListEndpointsRequest(selector="app=vllm"))
    finally:
        await server.stop(0)
        hub.close()
    assert received[0] == received[1]
    assert received[2] != received[0]
    for data in received:
        events = decoded([data]).events
        assert [(e.endpoint.name, e.endpoint.metrics.waiting_queue_size) for e in events] == [
            ("b", 9)
        ]
    assert service.encoder.reused >= 2  # the second stream's snapshot and update
    record = store.get("b")
    assert record is not None
    assert endpoint == endpoint_to_proto(record)
    assert [e.name for e in listing.endpoints] == ["a", "b"]
    assert listing.revision == store.revision
    assert listing.instance_id == store.instance_id


async def test_a_large_batch_is_split_and_only_the_last_response_is_synced(
    store: EndpointStore,
) -> None:
    """No response past `max_bytes`; SYNCED and the batch's revision only on the last; the
    others carry a revision a client can resume from without losing the rest."""
    hub = Hub(store, batch_window=0.001)
    for i in range(10):
        store.upsert(spec(f"big-{i}", app="vllm"))
        store.apply(f"big-{i}", update(i, tuple(f"lora-{i}-{j:04}" for j in range(40))), 1.0)
    encoder = WatchEncoder(store.instance_id, max_bytes=2_000)
    stream = hub.subscribe(WatchFilter()).batches()
    snapshot = await next_batch(stream)
    responses = [pb.WatchResponse.FromString(data) for data in encoder.encode(snapshot)]
    assert len(responses) > 3
    assert all(len(data) < 2_200 for data in encoder.encode(snapshot))
    assert [r.synced for r in responses] == [False] * (len(responses) - 1) + [True]
    assert all(r.full_snapshot for r in responses)
    assert [r.revision for r in responses[:-1]] == [0] * (len(responses) - 1)
    assert responses[-1].revision == store.revision
    names = [e.endpoint.name for r in responses for e in r.events]
    assert names == [e.name for e in snapshot.events]

    before = store.revision
    for i in range(10):
        store.apply(f"big-{i}", update(100 + i, tuple(f"x-{i}-{j:04}" for j in range(40))), 2.0)
    live = await next_batch(stream)
    split = [pb.WatchResponse.FromString(data) for data in encoder.encode(live)]
    assert len(split) > 3
    assert [r.revision for r in split] == [before] * (len(split) - 1) + [store.revision]
    assert not any(r.synced or r.full_snapshot for r in split)
