"""The hub in isolation: snapshot then SYNCED, coalescing, REMOVED never lost, filters, resume."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from datalayer.hub import Batch, EventKind, Hub, WatchFilter
from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.selector import parse_selector
from datalayer.store import EndpointStore


def spec(name: str, **labels: str) -> EndpointSpec:
    return EndpointSpec(name, "127.0.0.1", 8000, "", labels)


def waiting(n: int) -> EndpointUpdate:
    update = EndpointUpdate()
    update.set_metric("waiting_queue_size", n)
    return update


def kinds(batch: Batch) -> list[tuple[str, str]]:
    return [(e.kind.name, e.name) for e in batch.events]


async def next_batch(stream: AsyncIterator[Batch]) -> Batch:
    return await asyncio.wait_for(anext(stream), timeout=2)


@pytest.fixture
def store() -> EndpointStore:
    store = EndpointStore()
    store.upsert(spec("a", app="vllm"))
    store.upsert(spec("b", app="vllm"))
    store.upsert(spec("c", app="sglang"))
    return store


async def test_snapshot_then_synced_then_updates(store: EndpointStore) -> None:
    hub = Hub(store, batch_window=0.001)
    stream = hub.subscribe(WatchFilter(parse_selector("app=vllm"))).batches()
    first = await next_batch(stream)
    assert kinds(first) == [("ADDED", "a"), ("ADDED", "b")]
    assert first.synced
    assert first.full_snapshot
    store.apply("a", waiting(5), 1.0)
    store.apply("c", waiting(5), 1.0)  # not selected
    update = await next_batch(stream)
    assert kinds(update) == [("UPDATED", "a")]
    assert update.revision == store.revision
    record = update.events[0].record
    assert record is not None
    assert record.metrics.waiting_queue_size == 5


async def test_slow_subscriber_gets_latest_state_coalesced(store: EndpointStore) -> None:
    hub = Hub(store, batch_window=0.001)
    stream = hub.subscribe(WatchFilter()).batches()
    await next_batch(stream)
    for n in range(1, 51):
        store.apply("a", waiting(n), float(n))
        hub.flush()
    batch = await next_batch(stream)
    assert kinds(batch) == [("UPDATED", "a")]
    record = batch.events[0].record
    assert record is not None
    assert record.metrics.waiting_queue_size == 50
    assert hub.stats.coalesced == 49


async def test_removed_is_never_lost_even_when_re_added(store: EndpointStore) -> None:
    hub = Hub(store, batch_window=0.001)
    stream = hub.subscribe(WatchFilter()).batches()
    await next_batch(stream)
    store.remove("a")
    store.remove("b")
    store.upsert(spec("b", app="vllm"))  # removed and re-added before the subscriber reads
    hub.flush()
    batch = await next_batch(stream)
    assert kinds(batch) == [("REMOVED", "a"), ("REMOVED", "b"), ("ADDED", "b")]


async def test_relabel_out_of_selector_is_removed_and_back_in_is_added(
    store: EndpointStore,
) -> None:
    hub = Hub(store, batch_window=0.001)
    stream = hub.subscribe(WatchFilter(parse_selector("app=vllm"))).batches()
    await next_batch(stream)
    store.upsert(spec("a", app="other"))
    assert kinds(await next_batch(stream)) == [("REMOVED", "a")]
    store.upsert(spec("c", app="vllm"))
    assert kinds(await next_batch(stream)) == [("ADDED", "c")]


async def test_attribute_filter_skips_changes_to_other_parts(store: EndpointStore) -> None:
    hub = Hub(store, batch_window=0.001)
    stream = hub.subscribe(WatchFilter(parts=frozenset({"/v1/models"}))).batches()
    await next_batch(stream)
    store.apply("a", waiting(9), 1.0)  # metrics: not wanted
    models = EndpointUpdate()
    models.set_attribute("/v1/models", ["m"])
    store.apply("b", models, 1.0)
    store.set_status("c", stale=False, last_error="")  # status: always sent
    batch = await next_batch(stream)
    assert kinds(batch) == [("UPDATED", "b"), ("UPDATED", "c")]


async def test_names_filter(store: EndpointStore) -> None:
    hub = Hub(store, batch_window=0.001)
    stream = hub.subscribe(WatchFilter(names=frozenset({"c"}))).batches()
    assert kinds(await next_batch(stream)) == [("ADDED", "c")]


async def test_resume_inside_history_replays_the_gap(store: EndpointStore) -> None:
    hub = Hub(store, batch_window=0.001)
    resume_at = store.revision
    store.apply("a", waiting(1), 1.0)
    store.remove("b")
    store.upsert(spec("d", app="vllm"))
    subscriber = hub.subscribe(WatchFilter(), resume_at, store.instance_id)
    batch = await next_batch(subscriber.batches())
    assert not batch.full_snapshot
    assert batch.synced
    assert kinds(batch) == [("UPDATED", "a"), ("REMOVED", "b"), ("ADDED", "d")]


@pytest.mark.parametrize("instance", ["another-instance", "same"])
async def test_resume_outside_history_or_instance_gets_a_full_snapshot(
    store: EndpointStore, instance: str
) -> None:
    small = EndpointStore(history_size=1)
    for name in "xyz":
        small.upsert(spec(name))
    target = small if instance == "same" else store
    hub = Hub(target, batch_window=0.001)
    instance_id = target.instance_id if instance == "same" else instance
    batch = await next_batch(hub.subscribe(WatchFilter(), 1, instance_id).batches())
    assert batch.full_snapshot
    assert batch.synced
    assert {e.kind for e in batch.events} == {EventKind.ADDED}
    assert len(batch.events) == len(target)


async def test_heartbeat_when_idle(store: EndpointStore) -> None:
    hub = Hub(store)
    stream = hub.subscribe(WatchFilter(), heartbeat_interval=0.05).batches()
    await next_batch(stream)
    beat = await next_batch(stream)
    assert beat.events == []
    assert not beat.synced


async def test_min_interval_paces_and_coalesces(store: EndpointStore) -> None:
    hub = Hub(store, batch_window=0.001)
    stream = hub.subscribe(WatchFilter(), min_interval=0.2).batches()
    await next_batch(stream)
    loop = asyncio.get_running_loop()
    started = loop.time()
    store.apply("a", waiting(1), 1.0)
    first = await next_batch(stream)
    store.apply("a", waiting(2), 1.0)
    store.apply("b", waiting(2), 1.0)
    second = await next_batch(stream)
    assert kinds(first) == [("UPDATED", "a")]
    assert kinds(second) == [("UPDATED", "a"), ("UPDATED", "b")]
    assert loop.time() - started >= 0.2


async def test_subscriber_limit_and_close(store: EndpointStore) -> None:
    hub = Hub(store, max_subscribers=1)
    subscriber = hub.subscribe(WatchFilter())
    with pytest.raises(OverflowError, match="limit 1"):
        hub.subscribe(WatchFilter())
    stream = subscriber.batches()
    await next_batch(stream)
    hub.close()
    with pytest.raises(StopAsyncIteration):
        await next_batch(stream)
    assert not hub.subscribers


async def test_commits_never_wait_for_subscribers(store: EndpointStore) -> None:
    hub = Hub(store, batch_window=0.001)
    for _ in range(20):
        hub.subscribe(WatchFilter())  # nobody ever reads these
    for n in range(1000):
        store.apply("a", waiting(n), 1.0)
    await asyncio.sleep(0.01)
    assert all(len(s.pending) <= len(store) for s in hub.subscribers)


async def test_subscribers_with_equal_filters_share_work_not_state(store: EndpointStore) -> None:
    """Equal filters form one group (one selector evaluation per endpoint and spec), yet each
    subscriber keeps its own pending set and `known` names, and a relabel is seen by all."""
    hub = Hub(store, batch_window=0.001)
    vllm = parse_selector("app=vllm")
    one = hub.subscribe(WatchFilter(vllm))
    two = hub.subscribe(WatchFilter(parse_selector("app=vllm")))
    assert one.selects is two.selects
    first, second = one.batches(), two.batches()
    assert kinds(await next_batch(first)) == kinds(await next_batch(second))
    store.upsert(spec("a", app="sglang"))  # relabelled out of the selector
    store.apply("b", waiting(4), 1.0)
    for stream in (first, second):
        assert sorted(kinds(await next_batch(stream))) == [("REMOVED", "a"), ("UPDATED", "b")]
    hub.unsubscribe(one)
    late = hub.subscribe(WatchFilter(vllm))
    assert late.selects is two.selects
    assert kinds(await next_batch(late.batches())) == [("ADDED", "b")]
    store.upsert(spec("a", app="vllm"))  # back in
    assert kinds(await next_batch(second)) == [("ADDED", "a")]
    hub.unsubscribe(two)
    hub.unsubscribe(late)
    assert not hub.subscribers


async def test_no_initial_state_before_discovery_synced(store: EndpointStore) -> None:
    """A Watch opened before discovery loaded must not get SYNCED with a partial (here: one
    of three) snapshot: a mirror reconnecting after a restart would wipe its view."""
    store.remove("b")
    store.remove("c")
    synced = asyncio.Event()
    hub = Hub(store, batch_window=0.001, ready=lambda: synced)
    stream = hub.subscribe(WatchFilter()).batches()
    early = asyncio.ensure_future(next_batch(stream))
    await asyncio.sleep(0.05)
    assert not early.done()
    store.upsert(spec("b", app="vllm"))
    store.upsert(spec("c", app="sglang"))
    synced.set()
    first = await early
    assert first.synced
    assert first.full_snapshot
    assert kinds(first) == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]
    store.apply("b", waiting(3), 1.0)
    assert kinds(await next_batch(stream)) == [("UPDATED", "b")]  # not a second ADDED


async def test_after_a_reload_the_new_collectors_sync_is_awaited(store: EndpointStore) -> None:
    """`ready` is read again while waiting: a reload swaps in a new collector (a new event)."""
    old, new = asyncio.Event(), asyncio.Event()
    current = [old]
    hub = Hub(store, batch_window=0.001, ready=lambda: current[0])
    stream = hub.subscribe(WatchFilter()).batches()
    early = asyncio.ensure_future(next_batch(stream))
    await asyncio.sleep(0.02)
    current[0] = new  # the reload: the old collector never synced and never will
    await asyncio.sleep(0.02)
    assert not early.done()
    new.set()
    assert (await asyncio.wait_for(early, 3)).synced


async def test_a_stream_waiting_for_sync_ends_when_closed(store: EndpointStore) -> None:
    hub = Hub(store, ready=asyncio.Event)  # a fresh, never-set event each time
    stream = hub.subscribe(WatchFilter()).batches()
    waiting_task = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.02)
    hub.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting_task, 2)


async def test_resume_ahead_of_the_server_gets_a_full_snapshot(store: EndpointStore) -> None:
    """A revision this instance never reached cannot be replayed (a replay of it is 0 events
    and the client keeps whatever it holds): the stream sends everything instead."""
    hub = Hub(store, batch_window=0.001)
    subscriber = hub.subscribe(WatchFilter(), store.revision + 100, store.instance_id)
    batch = await next_batch(subscriber.batches())
    assert batch.full_snapshot
    assert batch.synced
    assert kinds(batch) == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]


async def test_batches_carry_a_safe_resume_point(store: EndpointStore) -> None:
    """`base_revision`: the revision the subscriber was at before the batch, which the encoder
    puts on all but the last response of a split batch."""
    hub = Hub(store, batch_window=0.001)
    stream = hub.subscribe(WatchFilter()).batches()
    snapshot = await next_batch(stream)
    assert snapshot.base_revision == 0
    store.apply("a", waiting(1), 1.0)
    live = await next_batch(stream)
    assert (live.base_revision, live.revision) == (snapshot.revision, store.revision)
    replayed = await next_batch(
        hub.subscribe(WatchFilter(), snapshot.revision, store.instance_id).batches()
    )
    assert not replayed.full_snapshot
    assert replayed.base_revision == snapshot.revision


async def test_a_revision_sent_never_covers_a_change_not_yet_flushed(
    store: EndpointStore,
) -> None:
    """A heartbeat (or batch) sent while a commit waits for the next flush must not claim its
    revision: a client resuming from it would never be sent that change."""
    hub = Hub(store, batch_window=0.5)
    stream = hub.subscribe(WatchFilter(), heartbeat_interval=0.05).batches()
    snapshot = await next_batch(stream)
    store.apply("a", waiting(4), 1.0)  # dirty for half a second
    beat = await next_batch(stream)
    assert beat.events == []
    assert beat.revision < store.revision
    resumed = hub.subscribe(WatchFilter(), beat.revision, store.instance_id).batches()
    assert kinds(await next_batch(resumed)) == [("UPDATED", "a")]
    assert snapshot.revision == beat.revision
