"""The collector's scheduling and staleness, with small in-process sources whose timing the test
controls (HTTP is covered by the integration tests)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from datalayer.collector import Collector
from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import Duration
from datalayer.plugin import Extractor, PollingDataSource
from datalayer.store import EndpointStore
from datalayer.wiring import CollectorSettings, SourceBinding


@dataclass
class _NoParams:
    pass


class ScriptedSource(PollingDataSource):
    """Answers with a counter per endpoint; endpoints named in `broken`/`slow` misbehave."""

    type_name = "scripted"
    Parameters = _NoParams
    output_type = dict

    def __init__(self) -> None:
        super().__init__("scripted", _NoParams())
        self.broken: set[str] = set()
        self.slow: set[str] = set()
        self.polls: dict[str, int] = {}
        self.active = 0

    async def poll(self, endpoint: EndpointSpec) -> Any:
        self.active += 1
        try:
            if endpoint.name in self.slow:
                await asyncio.sleep(3600)
            if endpoint.name in self.broken:
                raise ConnectionRefusedError("connection refused")
            self.polls[endpoint.name] = self.polls.get(endpoint.name, 0) + 1
            return {"n": self.polls[endpoint.name]}
        finally:
            self.active -= 1


class CountExtractor(Extractor):
    type_name = "count"
    Parameters = _NoParams
    input_type = dict

    def __init__(self) -> None:
        super().__init__("count", _NoParams())

    def extract(self, payload: Any, endpoint: EndpointSpec, out: EndpointUpdate) -> None:
        out.set_metric("running_requests_size", payload["n"])


class BrokenExtractor(CountExtractor):
    type_name = "broken"

    def extract(self, payload: Any, endpoint: EndpointSpec, out: EndpointUpdate) -> None:
        raise ValueError("bad payload")


def spec(name: str, **labels: str) -> EndpointSpec:
    return EndpointSpec(name, "127.0.0.1", 1, "", labels)


def make(
    source: ScriptedSource, *extractors: Extractor, interval: float = 0.01, timeout: float = 0.1
) -> tuple[EndpointStore, Collector]:
    store = EndpointStore()
    binding = SourceBinding(source, list(extractors or [CountExtractor()]), interval, timeout)
    settings = CollectorSettings(
        interval=Duration(interval),
        timeout=Duration(timeout),
        staleness_threshold=Duration(0.2),
    )
    return store, Collector(store, [binding], settings)


async def until(predicate: Any, timeout: float = 3.0) -> None:
    """Poll a condition on state the collector mutates (it has no event to wait on)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_polls_each_endpoint_and_commits_only_changes() -> None:
    source = ScriptedSource()
    store, collector = make(source)
    await collector.upsert(spec("a"))
    await collector.upsert(spec("b"))
    # Polls counted when finished (the source counts them when they start).
    await until(lambda: all(collector.lane_states(n)[0].polls >= 5 for n in ("a", "b")))
    a = store.get("a")
    assert a is not None
    assert not a.stale
    assert a.last_error == ""
    assert a.metrics.running_requests_size >= 5
    await collector.close()
    assert collector.task_count() == 0


async def test_hung_endpoint_times_out_turns_stale_and_never_delays_others() -> None:
    source = ScriptedSource()
    source.slow.add("hung")
    store, collector = make(source, timeout=0.05)
    await collector.upsert(spec("hung"))
    await collector.upsert(spec("ok"))
    await until(lambda: source.polls.get("ok", 0) >= 30)
    hung = store.get("hung")
    assert hung is not None
    assert hung.stale
    assert hung.last_error == "poll timed out after 0.05s"
    ok = store.get("ok")
    assert ok is not None
    assert not ok.stale
    await collector.close()


async def test_failure_is_reported_at_once_and_stale_after_threshold_then_recovers() -> None:
    source = ScriptedSource()
    store, collector = make(source)
    await collector.upsert(spec("a"))
    record = store.get("a")
    assert record is not None
    await until(lambda: not record.stale)
    source.broken.add("a")
    await until(lambda: record.last_error != "")
    assert record.last_error == "ConnectionRefusedError: connection refused"
    assert not record.stale  # the data is still within the staleness threshold
    await until(lambda: record.stale)
    source.broken.clear()
    await until(lambda: not record.stale)
    assert record.last_error == ""
    await collector.close()


async def test_extractor_exception_is_a_field_error_not_a_crash() -> None:
    source = ScriptedSource()
    store, collector = make(source, CountExtractor(), BrokenExtractor())
    await collector.upsert(spec("a"))
    record = store.get("a")
    assert record is not None
    await until(lambda: (record.metrics.running_requests_size or 0) >= 2)
    assert record.last_error == "count: extractor failed: ValueError: bad payload"
    assert not record.stale
    await collector.close()


async def test_relabel_keeps_the_lane_and_delete_cancels_and_awaits_the_poll() -> None:
    source = ScriptedSource()
    store, collector = make(source)
    await collector.upsert(spec("a", tier="x"))
    await until(lambda: collector.lane_states("a")[0].polls >= 2)
    (before,) = collector.lane_states("a")
    await collector.upsert(spec("a", tier="y"))  # relabel
    (after,) = collector.lane_states("a")
    assert after.polls >= before.polls >= 2  # the same lane: a new one would start at 0
    record = store.get("a")
    assert record is not None
    assert record.spec.labels == {"tier": "y"}
    source.slow.add("a")
    await until(lambda: source.active == 1)  # a poll hangs in flight
    await collector.delete("a")
    assert source.active == 0  # cancelled and ended before delete returned
    assert store.get("a") is None
    assert collector.task_count() == 0
    assert collector.lane_count() == 0
    await collector.close()


async def test_replace_all_applies_removals_then_additions_in_order() -> None:
    source = ScriptedSource()
    store, collector = make(source)
    order: list[tuple[str, frozenset[str]]] = []
    store.add_listener(lambda name, parts, rev: order.append((name, parts)))
    await collector.replace_all([spec("a"), spec("b")])
    await collector.replace_all([spec("b"), spec("c")])
    membership = [(n, p) for n, p in order if "@removed" in p or "@identity" in p]
    assert [n for n, _ in membership] == ["a", "b", "a", "c"]
    assert "@removed" in membership[2][1]
    assert sorted(store.names()) == ["b", "c"]
    await collector.close()


async def test_many_endpoints_poll_concurrently_with_jitter() -> None:
    source = ScriptedSource()
    source.slow.update(f"s{i}" for i in range(50))
    _, collector = make(source, timeout=1.0)
    for i in range(50):
        await collector.upsert(spec(f"s{i}"))
    await until(lambda: source.active == 50)  # all in flight at once: no lane waits on another
    await collector.close()
    assert source.active == 0
