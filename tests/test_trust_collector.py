"""What the collector lets a scheduler believe (issue: signals a scheduler can trust).

Unknown is never zero: a value not read again within its lane's staleness window is
dropped, and `last_error` names it. A read that yields only defaults is a failed read.
A slow source is judged against its own interval, and a reload keeps the lanes of
sources whose configuration did not change.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from test_collector import CountExtractor, ScriptedSource, make, spec, until

from datalayer.collector import Collector, spec_problem, staleness_window
from datalayer.config import load_config_text
from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import Duration
from datalayer.plugin import Extractor
from datalayer.registry import default_registry
from datalayer.store import EndpointStore
from datalayer.wiring import CollectorSettings, SourceBinding

from stack import Stack, eventually, running_stack


class _Params:
    def __repr__(self) -> str:
        return "_Params()"


class PartialExtractor(Extractor):
    """Reads `queue` when the payload has it, and always reads `running` (so the read
    itself succeeds): lets a test take one field away from an otherwise healthy pod."""

    type_name = "partial"
    Parameters = _Params
    input_type = dict

    def __init__(self) -> None:
        super().__init__("partial", _Params())
        self.drop_queue = False

    def extract(self, payload: Any, endpoint: EndpointSpec, out: EndpointUpdate) -> None:
        out.set_metric("running_requests_size", payload["n"])
        if self.drop_queue:
            out.error("waiting_queue_size", "family vllm:num_requests_waiting missing")
        else:
            out.set_metric("waiting_queue_size", 0)


class DefaultsOnlyExtractor(Extractor):
    """Like a LoRA extractor on a page without the LoRA family: defaults, no reading."""

    type_name = "defaults-only"
    Parameters = _Params
    input_type = dict

    def __init__(self) -> None:
        super().__init__("defaults-only", _Params())

    def extract(self, payload: Any, endpoint: EndpointSpec, out: EndpointUpdate) -> None:
        out.set_metric("active_models", (), default=True)
        out.set_metric("max_active_models", 0, default=True)


async def test_a_field_not_read_within_the_window_becomes_absent_and_is_named() -> None:
    source = ScriptedSource()
    extractor = PartialExtractor()
    store, collector = make(source, extractor)
    await collector.upsert(spec("a"))
    record = store.get("a")
    assert record is not None
    await until(lambda: record.metrics.waiting_queue_size == 0 and not record.stale)
    extractor.drop_queue = True
    # Partial success keeps the old value for a while; past the window it is unknown.
    await until(lambda: record.metrics.waiting_queue_size is None)
    assert not record.stale  # the other field is still read every tick
    assert "not read within the staleness window: waiting_queue_size" in record.last_error
    assert "vllm:num_requests_waiting missing" in record.last_error
    extractor.drop_queue = False
    await until(lambda: record.metrics.waiting_queue_size == 0)
    await until(lambda: record.last_error == "")
    await collector.close()


async def test_a_dead_pod_loses_every_value_not_just_freshness() -> None:
    source = ScriptedSource()
    store, collector = make(source, PartialExtractor())
    await collector.upsert(spec("a"))
    record = store.get("a")
    assert record is not None
    await until(lambda: record.metrics.running_requests_size is not None)
    source.broken.add("a")
    await until(lambda: record.stale and record.metrics.running_requests_size is None)
    assert record.metrics.waiting_queue_size is None
    assert record.last_error.startswith("ConnectionRefusedError")
    assert "running_requests_size" in record.last_error
    await collector.close()


async def test_a_payload_with_only_defaults_is_a_failed_read() -> None:
    source = ScriptedSource()
    store, collector = make(source, DefaultsOnlyExtractor())
    await collector.upsert(spec("a"))
    record = store.get("a")
    assert record is not None
    await until(lambda: source.polls.get("a", 0) >= 20)
    assert record.stale
    assert record.last_error == "no wanted signal in the payload"
    assert record.metrics.max_active_models is None
    await collector.close()


async def test_a_slow_source_is_judged_against_its_own_interval() -> None:
    source = ScriptedSource()
    # Threshold 0.2 s, but the source polls every 0.5 s: healthy, it must never look stale.
    store, collector = make(source, interval=0.5, timeout=0.1)
    await collector.upsert(spec("a"))
    record = store.get("a")
    assert record is not None
    await until(lambda: not record.stale)
    samples = []
    for _ in range(60):  # 1.2 s: more than two intervals
        samples.append(record.stale)
        await asyncio.sleep(0.02)
    assert not any(samples), f"stale in {sum(samples)} of {len(samples)} samples"
    assert source.polls["a"] >= 2
    await collector.close()


def test_the_window_is_the_threshold_or_the_lane_interval_plus_timeout() -> None:
    fast = SourceBinding(ScriptedSource(), [CountExtractor()], 0.05, 1.0)
    slow = SourceBinding(ScriptedSource(), [CountExtractor()], 5.0, 1.0)
    assert staleness_window(2.0, fast) == 2.0
    assert staleness_window(2.0, slow) == 6.25


def _collector(store: EndpointStore, source: ScriptedSource, interval: float) -> Collector:
    binding = SourceBinding(source, [CountExtractor()], interval, 0.1)
    settings = CollectorSettings(
        interval=Duration(0.01), timeout=Duration(0.1), staleness_threshold=Duration(0.2)
    )
    return Collector(store, [binding], settings)


async def test_a_reload_keeps_unchanged_lanes_fresh_and_starts_changed_ones_over() -> None:
    store = EndpointStore()
    source = ScriptedSource()
    old = _collector(store, source, 0.01)
    await old.upsert(spec("a"))
    record = store.get("a")
    assert record is not None
    await until(lambda: not record.stale)
    await old.close()

    # Same configuration (new plugin instances, equal parameters): fresh at once.
    same = _collector(store, ScriptedSource(), 0.01)
    assert same.inherit(old) == 1
    await same.upsert(spec("a"))
    assert same.lane_states("a")[0].since_success is not None
    assert not same.lane_states("a")[0].stale
    await same.close()

    # A changed interval is another source: nothing is carried over.
    changed = _collector(store, ScriptedSource(), 0.02)
    assert changed.inherit(same) == 0
    await changed.upsert(spec("a"))
    assert changed.lane_states("a")[0].stale
    await changed.close()


async def test_an_endpoint_with_oversized_labels_is_refused_by_name() -> None:
    store, collector = make(ScriptedSource())
    await collector.upsert(EndpointSpec("huge", "127.0.0.1", 1, "", {"x": "y" * 100_000}))
    await collector.upsert(spec("ok"))
    assert store.get("huge") is None
    assert store.get("ok") is not None
    problem = spec_problem(EndpointSpec("huge", "h", 1, "", {"x": "y" * 100_000}))
    assert "cap" in problem
    assert spec_problem(EndpointSpec("n" * 300, "h", 1)) != ""
    await collector.close()


SLOW_MODELS_CONFIG = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
- type: core-metrics-extractor
- type: models-data-source
  parameters: {{}}
- type: models-data-extractor
- type: file-discovery
  parameters: {{path: {endpoints}, pollInterval: 50ms}}
dataLayer:
  interval: 50ms
  timeout: 300ms
  stalenessThreshold: 500ms
  sources:
  - pluginRef: metrics-data-source
    extractors: [{{pluginRef: core-metrics-extractor}}]
  - pluginRef: models-data-source
    interval: 1s
    extractors: [{{pluginRef: models-data-extractor}}]
  discovery: {{pluginRef: file-discovery}}
"""


async def _stale_fraction(stack: Stack, seconds: float) -> float:
    """Sample every endpoint's `stale` over real gRPC for `seconds`."""
    samples = stale = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        for endpoint in (await stack.client.list_endpoints()).endpoints:
            samples += 1
            stale += endpoint.stale
        await asyncio.sleep(0.05)
    return stale / samples


async def test_healthy_pods_with_a_slow_source_are_never_stale_even_across_a_reload(
    tmp_path: Path,
) -> None:
    """The README's shape (models every 5 s, threshold 2 s) scaled down: models every 1 s,
    threshold 0.5 s. Real mock pods, real HTTP, real gRPC; stale samples before the fix: ~50%."""
    async with running_stack(tmp_path, SLOW_MODELS_CONFIG) as stack:

        async def all_fresh() -> bool:
            listed = (await stack.client.list_endpoints()).endpoints
            return len(listed) == 3 and not any(e.stale for e in listed)

        await eventually(all_fresh, timeout=10, what="all three pods fresh")
        assert await _stale_fraction(stack, 2.5) == 0.0
        # A reload of the same configuration keeps the lanes: nothing turns stale.
        config = load_config_text(
            SLOW_MODELS_CONFIG.format(endpoints=stack.endpoints_file),
            default_registry(),
            file="stack.yaml",
        )
        await stack.app.reload(config)
        assert await _stale_fraction(stack, 1.5) == 0.0
