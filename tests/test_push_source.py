"""push-data-source: the HTTP contract (204/400/401/404/413/415), Start/Stop, and end to end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from datalayer.model import EndpointSpec
from datalayer.parameters import decode
from mockpod.spec import PodSpec
from plugins.extractors.prometheus_metric.extractor import (
    PrometheusMetricExtractor,
    PrometheusMetricParameters,
)
from plugins.shared.payloads import JsonDocument
from plugins.shared.prometheus import MetricSamples
from plugins.sources.push.source import HttpPushDataSource, PushSourceParameters

from stack import JSON_EXTRACTOR, eventually, one_source_config_error, running_stack

POD_A = EndpointSpec("pod-a", "10.0.0.1", 8000)


class Sink:
    """Records deliveries; refuses names not in `members` (as the collector's sink does)."""

    def __init__(self, *members: str) -> None:
        self.members = set(members)
        self.delivered: list[tuple[str, Any]] = []

    def deliver(self, endpoint_name: str, payload: Any) -> bool:
        if endpoint_name not in self.members:
            return False
        self.delivered.append((endpoint_name, payload))
        return True


Running = Callable[..., Awaitable[tuple[HttpPushDataSource, str]]]


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    """Start push sources on free ports; each is stopped (cancelled and awaited) afterwards."""
    tasks: list[asyncio.Task[None]] = []

    async def start(sink: Sink, **params: Any) -> tuple[HttpPushDataSource, str]:
        params.setdefault("port", 0)
        source = HttpPushDataSource("push", decode(PushSourceParameters, params))
        load = PrometheusMetricExtractor("load", PrometheusMetricParameters(metric_name="load"))
        source.start([load])
        source.update_endpoints({"pod-a": POD_A})
        tasks.append(asyncio.create_task(source.run(sink)))
        async with asyncio.timeout(5):
            await source.listening.wait()
        return source, f"http://127.0.0.1:{source.port}/push"

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, data: Any, content_type: str | None, **headers: str
) -> tuple[int, str]:
    skip: list[str] = []
    if content_type is not None:
        headers["Content-Type"] = content_type
    else:
        skip.append("Content-Type")  # aiohttp would add application/octet-stream
    async with http.post(url, data=data, headers=headers, skip_auto_headers=skip) as response:
        return response.status, await response.text()


async def test_json_push_is_delivered_at_once(
    running: Running, http: aiohttp.ClientSession
) -> None:
    sink = Sink("pod-a")
    _, url = await running(sink)
    status, _ = await post(http, f"{url}/pod-a", b'{"queue": 3}', "application/json")
    assert status == 204
    assert sink.delivered == [("pod-a", JsonDocument({"queue": 3}))]


async def test_prometheus_push_is_scanned_for_the_extractors_names(
    running: Running, http: aiohttp.ClientSession
) -> None:
    sink = Sink("pod-a")
    _, url = await running(sink, format="prometheus")
    page = b"# TYPE load gauge\nload 2\nunwanted 5\n"
    status, _ = await post(http, f"{url}/pod-a", page, "text/plain; version=0.0.4")
    assert status == 204
    ((name, payload),) = sink.delivered
    assert name == "pod-a"
    assert isinstance(payload, MetricSamples)
    assert set(payload) == {"load"}
    assert payload["load"][0].value == 2.0


async def chunks(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // 1000):
        yield b" " * 1000


@pytest.mark.parametrize(
    ("path", "body", "content_type", "expected", "fragment"),
    [
        ("pod-x", b"{}", "application/json", 404, "'pod-x' is not an endpoint"),
        ("pod-a", b"{", "application/json", 400, "not JSON"),
        ("pod-a", b"load 1\n", "text/plain", 415, "this source takes json"),
        ("pod-a", b"<html><body>oops</body></html>", "application/json", 400, "not JSON"),
        ("pod-a", b"{}" + b" " * 2000, "application/json", 413, "2002 bytes exceeds the 1000"),
        ("pod-a", "chunked", "application/json", 413, "exceeds the 1000-byte limit"),
        ("pod-a", b'{"q": 1}', None, 204, ""),  # no Content-Type: the source's format
        ("pod-a", b'{"q": 1}', "application/octet-stream", 204, ""),  # says nothing either
    ],
)
async def test_refusals(
    running: Running,
    http: aiohttp.ClientSession,
    path: str,
    body: Any,
    content_type: str | None,
    expected: int,
    fragment: str,
) -> None:
    sink = Sink("pod-a")
    _, url = await running(sink, maxBodyBytes=1000)
    data = chunks(3000) if body == "chunked" else body
    status, text = await post(http, f"{url}/{path}", data, content_type)
    assert (status, fragment in text) == (expected, True)
    assert len(sink.delivered) == (1 if expected == 204 else 0)


async def test_an_html_push_to_a_prometheus_source_is_refused(
    running: Running, http: aiohttp.ClientSession
) -> None:
    """The exposition check runs on the push path too: 400, nothing delivered."""
    sink = Sink("pod-a")
    _, url = await running(sink, format="prometheus")
    status, text = await post(
        http,
        f"{url}/pod-a",
        b"<!DOCTYPE html>\n<html><body><h1>502 Bad Gateway</h1></body></html>\n",
        "text/plain",
    )
    assert status == 400
    assert "not a Prometheus text exposition" in text
    assert sink.delivered == []


async def test_endpoints_follow_update_endpoints_and_the_sink(
    running: Running, http: aiohttp.ClientSession
) -> None:
    sink = Sink("pod-a")
    source, url = await running(sink)
    source.update_endpoints({"pod-b": POD_A})
    assert (await post(http, f"{url}/pod-a", b"{}", "application/json"))[0] == 404
    # Known to the source but refused by the sink (removed in between): still a 404.
    assert (await post(http, f"{url}/pod-b", b"{}", "application/json"))[0] == 404
    assert sink.delivered == []


async def test_bearer_token(running: Running, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    sink = Sink("pod-a")
    _, url = await running(sink, bearerTokenFile=str(token_file))
    target = f"{url}/pod-a"
    assert (await post(http, target, b"{}", "application/json"))[0] == 401
    wrong = await post(http, target, b"{}", "application/json", Authorization="Bearer nope")
    assert wrong[0] == 401
    odd = await post(http, target, b"{}", "application/json", Authorization="Bearer s3crét")
    assert odd[0] == 401
    good = await post(http, target, b"{}", "application/json", Authorization="Bearer s3cret")
    assert good[0] == 204
    assert len(sink.delivered) == 1


async def test_cancel_stops_the_server_and_frees_the_port(http: aiohttp.ClientSession) -> None:
    source = HttpPushDataSource("push", PushSourceParameters(port=0))
    source.start([])
    task = asyncio.create_task(source.run(Sink()))
    async with asyncio.timeout(5):
        await source.listening.wait()
    url = f"http://127.0.0.1:{source.port}/push/pod-a"
    assert (await post(http, url, b"{}", "application/json"))[0] == 404
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert not source.listening.is_set()
    with pytest.raises(aiohttp.ClientConnectorError):
        await post(http, url, b"{}", "application/json")


@pytest.mark.parametrize(
    ("parameters", "path", "fragment"),
    [
        ("{port: 70000}", "port", "must be 0..65535"),
        ("{maxBodyBytes: 0}", "maxBodyBytes", "greater than zero"),
        ("{bearerTokenFile: /nonexistent/token}", "bearerTokenFile", "cannot read"),
        ("{format: protobuf}", "format", "expected one of"),
    ],
)
def test_parameter_errors(parameters: str, path: str, fragment: str) -> None:
    error = one_source_config_error(
        "push-data-source",
        parameters,
        JSON_EXTRACTOR,
    )
    assert error.path == f"plugins[0].parameters.{path}"
    assert fragment in error.message


def test_empty_token_file_is_a_parameter_error(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("  \n")
    with pytest.raises(ValueError, match="is empty"):
        HttpPushDataSource("p", PushSourceParameters(bearer_token_file=str(tmp_path / "token")))


# --- end to end: pushes beside polling, each endpoint collected its own way ---

CONFIG = """\
kind: DataLayerConfig
plugins:
- type: push-data-source
  name: push-json
  parameters: {{port: 0}}
- type: push-data-source
  name: push-prom
  parameters: {{port: 0, format: prometheus}}
- type: metrics-data-source
- type: core-metrics-extractor
- type: json-extractor
  parameters: {{fields: [{{path: queue, key: pushed_queue}}]}}
- type: file-discovery
  parameters: {{path: {endpoints}, pollInterval: 50ms}}
dataLayer:
  interval: 50ms
  stalenessThreshold: 400ms
  sources:
  - pluginRef: push-json
    selector: pod=pod-a
    extractors: [{{pluginRef: json-extractor}}]
  - pluginRef: push-prom
    selector: pod=pod-c
    extractors: [{{pluginRef: core-metrics-extractor}}]
  - pluginRef: metrics-data-source
    selector: pod in (pod-b)
    extractors: [{{pluginRef: core-metrics-extractor}}]
  discovery: {{pluginRef: file-discovery}}
"""

PODS = (PodSpec(name="pod-a"), PodSpec(name="pod-b"), PodSpec(name="pod-c"))


async def test_pushed_and_polled_endpoints_side_by_side(tmp_path: Path) -> None:
    async with running_stack(tmp_path, CONFIG, PODS) as stack:
        sources = stack.app.config.plugins
        push_json, push_prom = sources["push-json"], sources["push-prom"]
        assert isinstance(push_json, HttpPushDataSource)
        assert isinstance(push_prom, HttpPushDataSource)
        async with asyncio.timeout(5):
            await push_json.listening.wait()
            await push_prom.listening.wait()
        json_url = f"http://127.0.0.1:{push_json.port}/push"
        prom_url = f"http://127.0.0.1:{push_prom.port}/push"

        async def pod_a_pushable() -> bool:  # discovery has reported pod-a to the source
            status, _ = await post(stack.http, f"{json_url}/pod-a", b"{}", "application/json")
            return status == 204

        await eventually(pod_a_pushable, what="pod-a known to push-json")
        status, _ = await post(stack.http, f"{json_url}/pod-a", b'{"queue": 4}', None)
        assert status == 204
        # Delivered before the reply: readable at once, no tick in between.
        endpoint = await stack.client.get_endpoint("pod-a")
        assert endpoint.metrics.custom["pushed_queue"] == 4.0
        assert not endpoint.stale

        # pod-b is polled, not pushed: the push source refuses it.
        assert (await post(stack.http, f"{json_url}/pod-b", b"{}", None))[0] == 404

        # A sidecar relays pod-c's own /metrics page as Prometheus text.
        await stack.control(2, {"waiting": 6})
        async with stack.http.get(f"{stack.pods[2].url}/metrics") as response:
            page = await response.read()
        assert (await post(stack.http, f"{prom_url}/pod-c", page, "text/plain"))[0] == 204
        assert (await stack.client.get_endpoint("pod-c")).metrics.waiting_queue_size == 6

        await stack.control(1, {"waiting": 2})

        async def pod_b_polled() -> bool:
            return (await stack.client.get_endpoint("pod-b")).metrics.waiting_queue_size == 2

        await eventually(pod_b_polled, what="pod-b polled by metrics-data-source")

        async def pod_a_silent_goes_stale() -> bool:
            return (await stack.client.get_endpoint("pod-a")).stale

        await eventually(pod_a_silent_goes_stale, what="pod-a stale once it stops pushing")
        # Past its window an unread value is unknown, not kept as if current; the error says so.
        silent = await stack.client.get_endpoint("pod-a")
        assert "pushed_queue" not in silent.metrics.custom
        assert "custom[pushed_queue]" in silent.last_error
