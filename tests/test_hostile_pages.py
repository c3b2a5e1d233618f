"""Issue 10 items 2, 7, 8: pages that read nothing, and pages built to cost CPU or memory.

A scan runs on the event loop, so what one page costs is what every other pod's freshness and
every RPC waits for; these tests bound the *work* (lines that reach Python, bytes cached) rather
than time it (timings live in bench/hostile.py). A cap that was hit must be visible: the field
it fed gets an error naming the cap, never a silently partial value or a "no adapters" default.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from datalayer.model import EndpointSpec, EndpointUpdate
from mockpod.server import start_pods
from mockpod.spec import PodSpec
from mockpod.state import PodState
from plugins.extractors.core_metrics.extractor import CoreMetricsExtractor, CoreMetricsParameters
from plugins.extractors.prometheus_metric.extractor import (
    PrometheusMetricExtractor,
    PrometheusMetricParameters,
)
from plugins.shared.prometheus import scan as scan_module
from plugins.shared.prometheus.samples import MetricSamples, Sample
from plugins.shared.prometheus.scan import SelectiveScanner
from plugins.sources.metrics.source import MetricsDataSource, MetricsSourceParameters

POD = EndpointSpec("pod-a", "10.0.0.1", 8000)
WAITING = "vllm:num_requests_waiting"
CORE = CoreMetricsExtractor("core", CoreMetricsParameters())
MAX_SERIES = 64
MAX_LABEL = 16 * 1024
MAX_CACHE = 8 * 1024 * 1024


class CountingScanner(SelectiveScanner):
    """Counts the candidate lines that reach Python and the lines decoded in full.

    The search pass over the bytes is native code and linear in the page; the per-line Python
    work is what a hostile page multiplies, so it is what the caps must bound."""

    __slots__ = ("decoded", "taken")

    def __init__(self, names: frozenset[str]) -> None:
        super().__init__(names)
        self.taken = 0
        self.decoded = 0

    def _take(self, out: MetricSamples, body: bytes, raw: bytes, start: int) -> bool | None:
        self.taken += 1
        return super()._take(out, body, raw, start)

    def _decode(self, body: bytes, start: int, end: int, line: bytes) -> Sample | None:
        self.decoded += 1
        return super()._decode(body, start, end, line)


def normal_page() -> bytes:
    """A real vLLM V1 page from the mock pod's generator: one engine, no LoRA."""
    return PodState(PodSpec(name="one")).metrics.render()


def many_series(count: int, name: str = WAITING) -> bytes:
    return b"".join(
        b'%s{model_name="m",engine="%d"} 1.0\n' % (name.encode(), i) for i in range(count)
    )


def lora_line(running: bytes, stamp: bytes = b"1.7e9") -> bytes:
    return (
        b'vllm:lora_requests_info{max_lora="2",running_lora_adapters="'
        + running
        + b'",waiting_lora_adapters=""} '
        + stamp
        + b"\n"
    )


def extract(samples: MetricSamples) -> EndpointUpdate:
    out = EndpointUpdate()
    CORE.extract(samples, POD, out)
    return out


def real_cache_bytes(scanner: SelectiveScanner) -> int:
    """What the scanner's caches really hold: key bytes plus decoded label text."""
    total = 0
    for head, labels in scanner._heads.items():
        total += len(head) + sum(len(k) + len(v) for k, v in labels.items())
    for line, sample in scanner._lines.items():
        total += len(line) + sum(len(k) + len(v) for k, v in sample.labels.items())
    return total


# --- item 7: series per wanted family ---------------------------------------------------------


def test_100k_series_of_a_wanted_family_are_bounded_and_a_field_error() -> None:
    page = many_series(100_000) + normal_page()
    scanner = CountingScanner(CORE.required_names())
    samples = scanner.scan(page)
    assert len(samples[WAITING]) == MAX_SERIES
    assert samples.caps[WAITING] == f"more than {MAX_SERIES} series (cap hit)"
    # Lines reaching Python: the cap's worth of the hostile family, then the normal page's few.
    assert scanner.taken <= MAX_SERIES + 1 + 20
    out = extract(samples)
    assert "waiting_queue_size" not in out.metrics  # a sum of 64 of 100,000 would be a lie
    assert f"waiting_queue_size: {WAITING}: more than {MAX_SERIES} series (cap hit)" in out.errors
    assert out.metrics["running_requests_size"] == 0  # the rest of the page is still read
    assert "kv_cache_usage_percent" in out.metrics


def test_interleaved_hostile_series_are_bounded_too() -> None:
    """Not contiguous (a name's lines split by other lines): the capped name leaves the pattern."""
    page = b"".join(
        b'%s{engine="%d"} 1\nvllm:num_requests_running{engine="%d"} 1\n' % (WAITING.encode(), i, i)
        for i in range(20_000)
    )
    scanner = CountingScanner(CORE.required_names())
    samples = scanner.scan(page)
    assert len(samples[WAITING]) == MAX_SERIES
    assert len(samples["vllm:num_requests_running"]) == MAX_SERIES
    assert scanner.taken <= 2 * (MAX_SERIES + 1)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 3 * MAX_SERIES), st.booleans())
def test_series_cap_keeps_the_first_in_page_order(count: int, warm: bool) -> None:
    scanner = SelectiveScanner({WAITING})
    page = many_series(count)
    if warm:
        scanner.scan(page)  # the remembered-lines path must cap the same way
    samples = scanner.scan(page)
    kept = samples.get(WAITING, [])
    assert [s.labels["engine"] for s in kept] == [str(i) for i in range(min(count, MAX_SERIES))]
    assert (WAITING in samples.caps) == (count > MAX_SERIES)


def test_custom_metric_over_the_series_cap_is_an_error_naming_it() -> None:
    extractor = PrometheusMetricExtractor("load", PrometheusMetricParameters(metric_name="load"))
    samples = SelectiveScanner(extractor.required_names()).scan(many_series(500, "load"))
    out = EndpointUpdate()
    extractor.extract(samples, POD, out)
    assert out.custom == {}
    assert out.errors == [f"custom[load]: load: more than {MAX_SERIES} series (cap hit)"]


# --- item 7: label bytes ----------------------------------------------------------------------


def test_a_million_adapter_label_is_never_decoded_and_is_a_lora_error() -> None:
    names = b",".join(b"a%d" % i for i in range(1_000_000))
    page = normal_page() + lora_line(names)
    scanner = CountingScanner(CORE.required_names())
    samples = scanner.scan(page)
    assert "vllm:lora_requests_info" not in samples
    assert "cap hit" in samples.caps["vllm:lora_requests_info"]
    assert scanner.decoded <= 20  # the normal page's lines; not the 8 MB one
    out = extract(samples)
    # Not "no adapters": the family is there, it was refused.
    for field in ("active_models", "waiting_models", "max_active_models"):
        assert field not in out.metrics
        assert any(e.startswith(f"{field}: vllm:lora_requests_info: ") for e in out.errors)
    assert out.metrics["waiting_queue_size"] == 0


def test_a_label_value_over_16_kib_is_refused_with_the_cap_named() -> None:
    names = b",".join(b"adapter-%05d" % i for i in range(1_500))  # ~20 KB, one label
    samples = SelectiveScanner(CORE.required_names()).scan(lora_line(names))
    assert samples.caps["vllm:lora_requests_info"] == (
        f"a label value longer than {MAX_LABEL} bytes (cap hit)"
    )
    out = extract(samples)
    assert "active_models" not in out.metrics


def test_a_label_under_the_cap_is_read() -> None:
    names = b",".join(b"ad-%d" % i for i in range(900))  # ~5 KB
    out = extract(SelectiveScanner(CORE.required_names()).scan(lora_line(names)))
    assert len(out.metrics["active_models"]) == 900
    assert out.metrics["max_active_models"] == 2


def test_more_adapters_than_the_store_keeps_are_refused_before_sorting() -> None:
    names = b",".join(b"a%d" % i for i in range(1_500))  # ~8 KB: under the label cap
    out = extract(SelectiveScanner(CORE.required_names()).scan(lora_line(names)))
    assert "active_models" not in out.metrics
    assert (
        "active_models: vllm:lora_requests_info: running_lora_adapters lists more than "
        "1000 adapters (cap hit)"
    ) in out.errors
    assert out.metrics["waiting_models"] == ()  # the other list is fine


# --- item 8: cache bytes ----------------------------------------------------------------------


def test_cache_bytes_are_bounded_under_a_label_that_changes_every_scrape() -> None:
    """12 KB lines (under the label cap, so they are decoded and remembered), new each scrape."""
    scanner = SelectiveScanner(CORE.required_names())
    base = normal_page()
    filler = b"x" * 12_000
    worst = 0
    for i in range(1_500):
        scanner.scan(base + lora_line(b"v%d," % i + filler))
        worst = max(worst, real_cache_bytes(scanner))
    assert worst <= MAX_CACHE
    assert scanner.cache_bytes >= real_cache_bytes(scanner)  # the accounting does not undercount


def test_a_changing_10_mb_label_leaves_nothing_in_the_caches() -> None:
    scanner = SelectiveScanner(CORE.required_names())
    label = b"y" * (10 * 1024 * 1024)
    for i in range(5):
        scanner.scan(lora_line(b"%d" % i + label))
    assert real_cache_bytes(scanner) < 64 * 1024


def test_caps_are_the_documented_constants() -> None:
    assert scan_module.MAX_SERIES_PER_NAME == MAX_SERIES
    assert scan_module.MAX_LABEL_VALUE_BYTES == MAX_LABEL
    assert scan_module.MAX_CACHE_BYTES == MAX_CACHE


# --- over real HTTP ---------------------------------------------------------------------------


@pytest.fixture
async def hostile_server() -> AsyncIterator[int]:
    """The mock pod's real page with 100,000 extra series of the waiting family prepended."""
    body = many_series(100_000) + normal_page()

    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield int(runner.addresses[0][1])
    await runner.cleanup()


async def test_hostile_page_over_http_is_a_field_error(hostile_server: int) -> None:
    source = MetricsDataSource("m", MetricsSourceParameters())
    source.start([CORE])
    try:
        samples = await source.poll(EndpointSpec("pod", "127.0.0.1", hostile_server))
    finally:
        await source.close()
    out = extract(samples)
    assert any(e.startswith("waiting_queue_size: ") and "cap hit" in e for e in out.errors)
    assert out.readings >= 2  # running and KV use are real readings


async def test_real_mock_pods_hit_no_cap() -> None:
    """A data-parallel pod with LoRA, scraped for real: the caps leave normal pages alone."""
    pods = await start_pods(
        [PodSpec(name="dp", engines=2, loras=("sql-lora", "chat-lora"), max_lora=2)]
    )
    source = MetricsDataSource("m", MetricsSourceParameters())
    source.start([CORE])
    try:
        samples = await source.poll(EndpointSpec("dp", "127.0.0.1", pods.pods[0].port))
    finally:
        await source.close()
        await pods.close()
    assert samples.caps == {}
    out = extract(samples)
    assert out.errors == []
    assert out.readings >= 8
