"""The mock vLLM/SGLang pod, over real sockets: page format, control, simulation, many pods."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from mockpod.exposition import (
    CounterFamily,
    GaugeFamily,
    HistogramFamily,
    Page,
    SummaryFamily,
    format_value,
)
from mockpod.flavours import build_metrics
from mockpod.page import EngineLoad
from mockpod.server import PodGroup, start_pods
from mockpod.spec import DEFAULT_MODEL, PodSpec, consecutive_specs

Samples = dict[str, list[tuple[dict[str, str], float]]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def scrape(http: aiohttp.ClientSession, url: str) -> tuple[str, Samples]:
    async with http.get(f"{url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    matches = [v for lbl, v in samples[name] if all(lbl.get(k) == w for k, w in labels.items())]
    assert len(matches) == 1, (name, labels, samples.get(name))
    return matches[0]


async def control(http: aiohttp.ClientSession, url: str, body: Any, status: int = 200) -> Any:
    async with http.post(f"{url}/control", json=body) as resp:
        assert resp.status == status, await resp.text()
        return await resp.json()


async def eventually(check: Callable[[], Any], timeout: float = 5.0) -> None:
    """Poll an async predicate until true; fails with the last state after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def pod() -> AsyncIterator[PodGroup]:
    async with await start_pods([PodSpec()]) as group:
        yield group


# -- exposition ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [0.0, 1.0, 0.5, 2560.0, 1e-9, 123456.0, 1234567.0, 1.7e9, 1757846125.123456, -3.5, 7680.0,
     0.1 + 0.2, math.inf, -math.inf],
)  # fmt: skip
def test_format_value_matches_prometheus_client(number: float) -> None:
    assert format_value(number) == floatToGoString(number)  # type: ignore[no-untyped-call]


_CREATED = re.compile(r"^(\S+_created(?:\{[^}]*\})?) \S+$", re.MULTILINE)


def test_families_render_like_prometheus_client() -> None:
    reg = CollectorRegistry()
    pc_gauge = Gauge(
        "vllm:num_requests_waiting", "Waiting.", ["model_name", "engine"], registry=reg
    )
    pc_counter = Counter(
        "vllm:request_success", "Done.", ["model_name", "engine", "finished_reason"], registry=reg
    )
    pc_hist = Histogram(
        "vllm:e2e_request_latency_seconds",
        "E2e.",
        ["model_name", "engine"],
        buckets=[0.3, 1.0, 7680.0],
        registry=reg,
    )
    pc_summary = Summary("http_request_size_bytes", 'Size "x"\\n.', ["handler"], registry=reg)

    gauge = GaugeFamily("vllm:num_requests_waiting", "Waiting.")
    counter = CounterFamily("vllm:request_success", "Done.")
    hist = HistogramFamily("vllm:e2e_request_latency_seconds", "E2e.", [0.3, 1.0, 7680.0])
    summary = SummaryFamily("http_request_size_bytes", 'Size "x"\\n.')
    for engine in ("0", "1"):
        labels = {"model_name": 'm"q', "engine": engine}
        pc_gauge.labels(*labels.values()).set(3.5)
        gauge.add(engine, labels, 3.5)
        pc_counter.labels('m"q', engine, "stop").inc(7)
        counter.add(engine, {**labels, "finished_reason": "stop"}, 0.0, 7.0)
        hist.add(engine, labels, 0.0)
        for observed in (0.2, 0.3, 5.0, 9000.0):
            pc_hist.labels(*labels.values()).observe(observed)
            hist.observe(engine, observed)
    pc_summary.labels("/v1/completions").observe(120)
    summary.add("c", {"handler": "/v1/completions"}, 0.0)
    summary.observe("c", 120)

    expected = _CREATED.sub(r"\1 T", generate_latest(reg).decode())
    ours = Page([gauge, counter, hist, summary]).render().decode()
    assert _CREATED.sub(r"\1 T", ours) == expected


def test_multiprocess_histogram_puts_sum_first_and_has_no_created() -> None:
    hist = HistogramFamily("sglang:x_seconds", "X.", [1.0], multiprocess=True)
    hist.add(0, {"model_name": "m"}, 0.0)
    hist.observe(0, 0.5)
    lines = hist.chunk().decode().splitlines()
    assert lines[2:] == [
        'sglang:x_seconds_sum{model_name="m"} 0.5',
        'sglang:x_seconds_bucket{le="1.0",model_name="m"} 1.0',
        'sglang:x_seconds_bucket{le="+Inf",model_name="m"} 1.0',
        'sglang:x_seconds_count{model_name="m"} 1.0',
    ]


def test_scrape_rerenders_only_what_changed() -> None:
    metrics = build_metrics(PodSpec(), time.time())
    assert metrics.render() == metrics.render()
    hist = metrics.h_e2e  # type: ignore[attr-defined]
    gauge = metrics.waiting  # type: ignore[attr-defined]
    hist_chunk, gauge_chunk = hist.chunk(), gauge.chunk()
    metrics.set_load(0, EngineLoad(running=1, waiting=4, kv_cache_usage=0.5))
    assert hist.chunk() is hist_chunk
    assert gauge.chunk() is not gauge_chunk
    assert b'vllm:num_requests_waiting{engine="0",model_name=' in metrics.render()


def test_vllm_page_has_every_histogram_bucket() -> None:
    text = build_metrics(PodSpec(), time.time()).render().decode()
    expected = {
        "vllm:time_to_first_token_seconds": 22,
        "vllm:inter_token_latency_seconds": 19,
        "vllm:request_time_per_output_token_seconds": 19,
        "vllm:e2e_request_latency_seconds": 21,
        "vllm:request_queue_time_seconds": 21,
        "vllm:request_inference_time_seconds": 21,
        "vllm:request_prefill_time_seconds": 21,
        "vllm:request_decode_time_seconds": 21,
        "vllm:request_prompt_tokens": 14,
        "vllm:request_generation_tokens": 14,
        "vllm:request_max_num_generation_tokens": 14,
        "vllm:request_params_max_tokens": 14,
        "vllm:iteration_tokens_total": 13,
        "vllm:request_params_n": 5,
    }
    for name, buckets in expected.items():
        assert text.count(f"{name}_bucket{{") == buckets + 1, name  # + the +Inf bucket
        assert f"{name}_created{{" in text
    assert "# TYPE vllm:prompt_tokens_total counter" in text
    assert "# TYPE vllm:prompt_tokens_created gauge" in text


# -- over HTTP ----------------------------------------------------------------------------------


async def test_metrics_page_is_large_and_parses(pod: PodGroup, http: aiohttp.ClientSession) -> None:
    text, samples = await scrape(http, pod[0].url)
    assert len(text.encode()) >= 50_000
    assert value(samples, "vllm:num_requests_running", engine="0", model_name=DEFAULT_MODEL) == 0
    assert value(samples, "vllm:num_requests_waiting_by_reason", reason="deferred") == 0
    info = samples["vllm:cache_config_info"]
    assert info[0][0]["block_size"] == "16"
    assert info[0][0]["num_gpu_blocks"] == "8192"
    assert "vllm:lora_requests_info" not in samples  # LoRA not enabled
    assert 'vllm:request_params_n_bucket{engine="0",le="1.0",model_name=' in text
    assert any(name.startswith("python_gc_") for name in samples)
    assert "process_resident_memory_bytes" in samples
    assert "http_requests_total" in samples


async def test_control_overrides_win_and_clear(pod: PodGroup, http: aiohttp.ClientSession) -> None:
    url = pod[0].url
    report = await control(http, url, {"waiting": 5, "running": 3, "kv_cache_usage": 0.42})
    assert (report["waiting"], report["running"], report["kv_cache_usage"]) == (5, 3, 0.42)
    _, samples = await scrape(http, url)
    assert value(samples, "vllm:num_requests_waiting") == 5
    assert value(samples, "vllm:num_requests_running") == 3
    assert value(samples, "vllm:kv_cache_usage_perc") == 0.42
    assert value(samples, "vllm:num_requests_waiting_by_reason", reason="capacity") == 5

    await control(http, url, {"waiting": None})
    _, samples = await scrape(http, url)
    assert value(samples, "vllm:num_requests_waiting") == 0
    assert value(samples, "vllm:num_requests_running") == 3

    await control(http, url, {"reset": True})
    async with http.get(f"{url}/control") as resp:
        report = await resp.json()
    assert (report["waiting"], report["running"], report["kv_cache_usage"]) == (0, 0, 0.0)
    assert all(v is None for v in report["overrides"].values())
    _, samples = await scrape(http, url)
    assert value(samples, "vllm:num_requests_running") == 0


async def test_control_rejects_bad_bodies_without_partial_changes(
    pod: PodGroup, http: aiohttp.ClientSession
) -> None:
    url = pod[0].url
    await control(http, url, {"waiting": 2, "wating": 1}, status=400)
    await control(http, url, {"waiting": 2, "running": -1}, status=400)
    await control(http, url, {"running_lora": [1]}, status=400)
    await control(http, url, [1], status=400)
    async with http.get(f"{url}/control") as resp:
        assert (await resp.json())["waiting"] == 0


async def test_control_spreads_over_engines(http: aiohttp.ClientSession) -> None:
    async with await start_pods([PodSpec(engines=2)]) as group:
        url = group[0].url
        await control(http, url, {"waiting": 5, "kv_cache_usage": 0.25, "running": [1, 2]})
        _, samples = await scrape(http, url)
        assert value(samples, "vllm:num_requests_waiting", engine="0") == 3
        assert value(samples, "vllm:num_requests_waiting", engine="1") == 2
        assert value(samples, "vllm:num_requests_running", engine="1") == 2
        assert value(samples, "vllm:kv_cache_usage_perc", engine="1") == 0.25
        await control(http, url, {"running": [1]}, status=400)


def _lora_series(samples: Samples) -> list[tuple[dict[str, str], float]]:
    return samples["vllm:lora_requests_info"]


def _current_lora(samples: Samples) -> dict[str, str]:
    return max(_lora_series(samples), key=lambda s: s[1])[0]


async def test_lora_info_keeps_old_series_and_newest_is_largest(
    http: aiohttp.ClientSession,
) -> None:
    async with await start_pods([PodSpec(loras=("a", "b"), max_lora=2)]) as group:
        url = group[0].url
        _, samples = await scrape(http, url)
        assert _current_lora(samples) == {
            "max_lora": "2",
            "running_lora_adapters": "",
            "waiting_lora_adapters": "",
        }
        steps: list[tuple[list[str], list[str]]] = [
            (["a"], []),
            (["b", "a"], ["a"]),
            (["a"], []),  # a combination seen before becomes current again
        ]
        for running, waiting in steps:
            await control(http, url, {"running_lora": running, "waiting_lora": waiting})
            _, samples = await scrape(http, url)
            current = _current_lora(samples)
            assert current["running_lora_adapters"] == ",".join(running)
            assert current["waiting_lora_adapters"] == ",".join(waiting)
        assert len(_lora_series(samples)) == 3
        assert all(v > 1e9 for _, v in _lora_series(samples))  # unix seconds


async def test_models_lists_base_and_adapters(http: aiohttp.ClientSession) -> None:
    async with await start_pods([PodSpec(model="base", loras=("x", "y"))]) as group:
        async with http.get(f"{group[0].url}/v1/models") as resp:
            assert resp.status == 200
            body = await resp.json()
        async with http.get(f"{group[0].url}/health") as resp:
            assert resp.status == 200
    assert body["object"] == "list"
    assert [(m["id"], m["parent"]) for m in body["data"]] == [
        ("base", None),
        ("x", "base"),
        ("y", "base"),
    ]
    assert body["data"][0]["root"] == "base"
    assert all(m["object"] == "model" and m["max_model_len"] == 32768 for m in body["data"])


async def test_unknown_model_is_404(pod: PodGroup, http: aiohttp.ClientSession) -> None:
    url = pod[0].url
    for path, body in (
        ("/v1/completions", {"model": "nope", "prompt": "hi"}),
        ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    ):
        async with http.post(f"{url}{path}", json=body) as resp:
            assert resp.status == 404
            error = (await resp.json())["error"]
        assert error["code"] == 404
        assert "nope" in error["message"]
    _, samples = await scrape(http, url)
    assert value(samples, "http_requests_total", handler="/v1/completions", status="4xx") == 1


async def test_completion_shapes(pod: PodGroup, http: aiohttp.ClientSession) -> None:
    url = pod[0].url
    body = {"model": DEFAULT_MODEL, "prompt": "x" * 40, "max_tokens": 3}
    async with http.post(f"{url}/v1/completions", json=body) as resp:
        assert resp.status == 200
        done = await resp.json()
    assert done["object"] == "text_completion"
    assert done["model"] == DEFAULT_MODEL
    assert done["usage"] == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    assert len(done["choices"][0]["text"].split()) == 3
    chat = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "hello"}], "n": 2}
    async with http.post(f"{url}/v1/chat/completions", json=chat) as resp:
        assert resp.status == 200
        done = await resp.json()
    assert done["object"] == "chat.completion"
    assert [c["message"]["role"] for c in done["choices"]] == ["assistant", "assistant"]
    async with http.post(f"{url}/v1/completions", data=b"{not json") as resp:
        assert resp.status == 400
    _, samples = await scrape(http, url)
    assert value(samples, "vllm:request_success_total", finished_reason="length") == 2
    assert value(samples, "vllm:prompt_tokens_total") == 10 + (len("hello") // 4 + 4)
    assert value(samples, "vllm:generation_tokens_total") == 3 + 2 * 16
    assert value(samples, "vllm:request_params_n_count") == 2


async def test_load_moves_running_waiting_and_kv(http: aiohttp.ClientSession) -> None:
    spec = PodSpec(
        max_num_seqs=2, num_gpu_blocks=64, seconds_per_output_token=0.005, max_request_seconds=0.2
    )
    async with await start_pods([spec]) as group:
        url = group[0].url
        body = {"model": DEFAULT_MODEL, "prompt": "x" * 400, "max_tokens": 30}
        seen: dict[str, float] = {}

        async def busy() -> bool:
            _, samples = await scrape(http, url)
            seen["running"] = value(samples, "vllm:num_requests_running")
            seen["waiting"] = value(samples, "vllm:num_requests_waiting")
            seen["kv"] = value(samples, "vllm:kv_cache_usage_perc")
            return seen["waiting"] > 0

        async def post() -> int:
            async with http.post(f"{url}/v1/completions", json=body) as resp:
                return resp.status

        requests = [asyncio.create_task(post()) for _ in range(5)]
        await eventually(busy)
        assert seen["running"] == 2
        # Two requests of 100 + 30 tokens hold 9 blocks each of 64.
        assert seen["kv"] == pytest.approx(18 / 64)
        assert await asyncio.gather(*requests) == [200] * 5

        _, samples = await scrape(http, url)
        assert value(samples, "vllm:num_requests_running") == 0
        assert value(samples, "vllm:num_requests_waiting") == 0
        assert value(samples, "vllm:kv_cache_usage_perc") == 0
        assert value(samples, "vllm:e2e_request_latency_seconds_count") == 5
        assert value(samples, "vllm:request_queue_time_seconds_sum") > 0
        assert value(samples, "vllm:generation_tokens_total") == 150


async def test_lora_limit_defers_other_adapters(http: aiohttp.ClientSession) -> None:
    # max_lora=1: of two requests for different adapters, whichever arrives first runs and
    # the other waits as "deferred", though seven more slots are free.
    spec = PodSpec(loras=("a", "b"), max_lora=1, seconds_per_output_token=0.005)
    async with await start_pods([spec]) as group:
        url = group[0].url

        async def post(model: str) -> int:
            body = {"model": model, "prompt": "hi", "max_tokens": 60}
            async with http.post(f"{url}/v1/completions", json=body) as resp:
                return resp.status

        requests = [asyncio.create_task(post(model)) for model in ("a", "b")]
        seen: dict[str, Any] = {}

        async def deferred() -> bool:
            _, samples = await scrape(http, url)
            seen.update(_current_lora(samples))
            seen["running"] = value(samples, "vllm:num_requests_running")
            return value(samples, "vllm:num_requests_waiting_by_reason", reason="deferred") == 1

        await eventually(deferred)
        assert seen["running"] == 1
        assert {seen["running_lora_adapters"], seen["waiting_lora_adapters"]} == {"a", "b"}
        assert list(await asyncio.gather(*requests)) == [200, 200]
        _, samples = await scrape(http, url)
        assert _current_lora(samples)["running_lora_adapters"] == ""


async def _start_consecutive(template: PodSpec, count: int) -> PodGroup:
    """Find a free run of ports: ask the OS for one, then try to bind the ones after it."""
    last_error: OSError | None = None
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        specs = consecutive_specs(dataclasses.replace(template, port=base), count)
        try:
            return await start_pods(specs)
        except OSError as exc:
            last_error = exc
    raise AssertionError(f"no free run of {count} ports: {last_error}")


async def test_many_pods_on_consecutive_ports(http: aiohttp.ClientSession) -> None:
    async with await _start_consecutive(PodSpec(name="pool"), 3) as group:
        assert group.ports == [group.ports[0] + i for i in range(3)]
        await control(http, group[1].url, {"waiting": 7})
        waiting = []
        for pod in group.pods:
            async with http.get(f"{pod.url}/control") as resp:
                report = await resp.json()
            waiting.append(report["waiting"])
            assert report["pod"] == pod.spec.name
        assert waiting == [0, 7, 0]
        assert [p.spec.name for p in group.pods] == ["pool-0", "pool-1", "pool-2"]
        first = group[0].url
    with pytest.raises(aiohttp.ClientConnectionError):
        await http.get(f"{first}/health")


async def test_taken_port_starts_nothing(http: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="in use"):
            await start_pods([PodSpec(port=free), PodSpec(port=port)])
    # The first pod did start, and was closed again when the second failed.
    with pytest.raises(aiohttp.ClientConnectionError):
        await http.get(f"http://127.0.0.1:{free}/health")


async def test_two_engines_with_lora_page(http: aiohttp.ClientSession) -> None:
    async with await start_pods([PodSpec(engines=2, loras=("a",))]) as group:
        text, samples = await scrape(http, group[0].url)
    assert len(text.encode()) >= 90_000
    engines = {lbl["engine"] for lbl, _ in samples["vllm:num_requests_running"]}
    assert engines == {"0", "1"}
    assert {lbl["engine"] for lbl, _ in samples["vllm:cache_config_info"]} == {"0", "1"}


async def test_churn_moves_the_gauges_on_every_scrape(http: aiohttp.ClientSession) -> None:
    """`--churn` (benchmarks): each /metrics request reads other waiting/running/KV values."""
    async with await start_pods([PodSpec(engines=2, churn=True)]) as group:
        reads = [await scrape(http, group[0].url) for _ in range(3)]
    for name in ("vllm:num_requests_waiting", "vllm:num_requests_running"):
        values = [sorted(v for _, v in samples[name]) for _, samples in reads]
        assert values[0] != values[1] != values[2], name
    kv = [value(samples, "vllm:kv_cache_usage_perc", engine="1") for _, samples in reads]
    assert kv[0] != kv[1] != kv[2]
    assert all(0 <= x <= 1 for x in kv)


async def test_sglang_flavour(http: aiohttp.ClientSession) -> None:
    spec = PodSpec(engine_type="sglang", block_size=32, num_gpu_blocks=1000)
    async with await start_pods([spec]) as group:
        url = group[0].url
        await control(http, url, {"waiting": 4, "running": 2, "kv_cache_usage": 0.5})
        text, samples = await scrape(http, url)
    assert value(samples, "sglang:num_queue_reqs") == 4
    assert value(samples, "sglang:num_running_reqs") == 2
    assert value(samples, "sglang:token_usage") == 0.5
    info = samples["sglang:cache_config_info"][0][0]
    assert (info["page_size"], info["num_pages"]) == ("32", "1000")
    assert "_created" not in text
    assert "vllm:" not in text
    ttft = [line for line in text.splitlines() if line.startswith("sglang:time_to_first_token")]
    assert "_sum{" in ttft[0]
    assert "_count{" in ttft[-1]


@pytest.mark.slow
async def test_cli_serves_and_stops_on_sigterm(http: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mockpod", "--port", str(port), "--model", "m", "--lora", "a",
        "--engines", "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)
        assert f"127.0.0.1:{port}" in line.decode()
        _, samples = await scrape(http, f"http://127.0.0.1:{port}")
        assert _current_lora(samples)["max_lora"] == "1"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
