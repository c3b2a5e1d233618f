import math

from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.store import EndpointStore


def spec(name: str = "a", **labels: str) -> EndpointSpec:
    return EndpointSpec(name, "127.0.0.1", 8000, "ns", labels)


def recorder(store: EndpointStore) -> list[tuple[str, frozenset[str], int]]:
    changes: list[tuple[str, frozenset[str], int]] = []
    store.add_listener(lambda name, parts, rev: changes.append((name, parts, rev)))
    return changes


def update(**metrics: object) -> EndpointUpdate:
    out = EndpointUpdate()
    for key, value in metrics.items():
        out.set_metric(key, value)
    return out


def test_every_commit_bumps_one_revision_and_names_its_parts() -> None:
    store = EndpointStore()
    changes = recorder(store)
    store.upsert(spec())
    store.apply("a", update(waiting_queue_size=3), now=1.0)
    store.set_status("a", stale=False, last_error="")
    store.upsert(spec(tier="x"))
    store.remove("a")
    assert [(parts, rev) for _, parts, rev in changes] == [
        (frozenset({"@identity", "@status", "metrics"}), 1),
        (frozenset({"metrics"}), 2),
        (frozenset({"@status"}), 3),
        (frozenset({"@identity"}), 4),
        (frozenset({"@removed"}), 5),
    ]
    assert store.revision == 5


def test_same_values_are_not_a_commit_but_refresh_update_time() -> None:
    store = EndpointStore()
    store.upsert(spec())
    store.apply("a", update(kv_cache_usage_percent=math.nan, running_requests_size=2), now=1.0)
    revision = store.revision
    parts = store.apply("a", update(kv_cache_usage_percent=math.nan, running_requests_size=2), 9.0)
    assert parts == frozenset()
    assert store.revision == revision
    record = store.get("a")
    assert record is not None
    assert record.metrics.update_time == 9.0


def test_partial_update_keeps_fields_it_did_not_read() -> None:
    store = EndpointStore()
    store.upsert(spec())
    store.apply("a", update(waiting_queue_size=4, running_requests_size=7), now=1.0)
    store.apply("a", update(running_requests_size=1), now=2.0)
    record = store.get("a")
    assert record is not None
    assert (record.metrics.waiting_queue_size, record.metrics.running_requests_size) == (4, 1)


def test_attributes_change_by_key() -> None:
    store = EndpointStore()
    changes = recorder(store)
    store.upsert(spec())
    first = EndpointUpdate()
    first.set_attribute("/v1/models", [{"id": "m", "parent": None}])
    first.set_custom("queue_ms", 3.0)
    assert store.apply("a", first, now=1.0) == frozenset({"/v1/models", "metrics"})
    again = EndpointUpdate()
    again.set_attribute("/v1/models", [{"id": "m", "parent": None}])
    assert store.apply("a", again, now=2.0) == frozenset()
    record = store.get("a")
    assert record is not None
    assert record.attributes["/v1/models"].update_time == 2.0
    assert record.metrics.custom == {"queue_ms": 3.0}
    assert len(changes) == 2


def test_unchanged_upsert_and_unknown_names_are_no_ops() -> None:
    store = EndpointStore()
    store.upsert(spec())
    assert not store.upsert(spec())
    assert not store.remove("nope")
    assert store.apply("nope", update(waiting_queue_size=1), 1.0) == frozenset()
    assert not store.set_status("nope", True, "x")
    assert store.revision == 1


def test_changed_since_covers_history_or_says_it_cannot() -> None:
    store = EndpointStore(history_size=3)
    for name in "abcd":
        store.upsert(spec(name))  # revisions 1..4, history keeps 2..4
    assert store.changed_since(4) == []
    assert store.changed_since(2) == ["c", "d"]
    assert store.changed_since(1) == ["b", "c", "d"]
    assert store.changed_since(0) is None
    store.upsert(spec("b", x="1"))
    assert store.changed_since(3) == ["d", "b"]


def test_new_endpoints_start_stale_until_collected() -> None:
    store = EndpointStore()
    store.upsert(spec())
    record = store.get("a")
    assert record is not None
    assert record.stale
    assert record.last_error == "no data collected yet"
