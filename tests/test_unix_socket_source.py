"""unix-socket-data-source against real aiohttp servers on Unix sockets, and end to end."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import decode
from mockpod.spec import PodSpec
from plugins.extractors.core_metrics.extractor import CoreMetricsExtractor, CoreMetricsParameters
from plugins.shared.http.aio import PollError
from plugins.shared.payloads import JsonDocument
from plugins.shared.prometheus import MetricSamples
from plugins.sources.unix_socket import source as source_module
from plugins.sources.unix_socket.source import UnixSocketDataSource, UnixSocketSourceParameters

from stack import eventually, one_source_config_error, running_stack

PAGE = b"""# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
vllm:num_requests_running{engine="0",model_name="m"} 1.0
vllm:some_histogram_bucket{le="1"} 9.0
"""


def spec(name: str) -> EndpointSpec:
    return EndpointSpec(name, "10.0.0.1", 8000, namespace="default")


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory: a socket path must fit in sun_path (108 bytes); tmp_path may not."""
    with tempfile.TemporaryDirectory(prefix="dl-uds-", dir="/tmp") as directory:
        yield Path(directory)


class SocketServer:
    """Pages on a Unix socket per pod name; counts connections to observe keep-alive."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.connections: set[int] = set()
        self.accept: list[str] = []

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        self.connections.add(id(request.transport))
        self.accept.append(request.headers.get("Accept", ""))
        if self.mode == "500":
            return web.Response(status=500, text="boom")
        if self.mode == "html":  # a proxy's error page, with status 200
            return web.Response(
                body=b"<!DOCTYPE html>\n<html><body><h1>502 Bad Gateway</h1></body></html>\n",
                content_type="text/html",
            )
        if self.mode == "huge":
            return web.Response(body=PAGE + b"#" * 5000, content_type="text/plain")
        return web.Response(body=PAGE, content_type="text/plain")

    async def load(self, request: web.Request) -> web.Response:
        if self.mode == "bad-json":
            return web.Response(text="{not json", content_type="application/json")
        return web.json_response({"pod": request.match_info["pod"], "queue": {"waiting": 2}})


@pytest.fixture
async def server(sock_dir: Path) -> AsyncIterator[SocketServer]:
    pages = SocketServer()
    app = web.Application()
    app.router.add_get("/metrics", pages.metrics)
    app.router.add_get("/load/{pod}", pages.load)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for pod in ("pod-a", "pod-b"):
        await web.UnixSite(runner, str(sock_dir / f"{pod}.sock")).start()
    yield pages
    await runner.cleanup()


async def started(sock_dir: Path, **params: Any) -> UnixSocketDataSource:
    params.setdefault("socketPath", f"{sock_dir}/{{name}}.sock")
    source = UnixSocketDataSource("uds", decode(UnixSocketSourceParameters, params, "parameters"))
    source.start([CoreMetricsExtractor("core", CoreMetricsParameters())])
    return source


async def test_prometheus_page_is_scanned_for_the_extractors_names(
    server: SocketServer, sock_dir: Path
) -> None:
    source = await started(sock_dir)
    try:
        payload = await source.poll(spec("pod-a"))
    finally:
        await source.close()
    assert isinstance(payload, MetricSamples)
    assert "vllm:some_histogram_bucket" not in payload  # nobody asked for it
    out = EndpointUpdate()
    CoreMetricsExtractor("core", CoreMetricsParameters()).extract(payload, spec("pod-a"), out)
    assert out.metrics["waiting_queue_size"] == 4
    assert out.metrics["running_requests_size"] == 1
    assert server.accept[0].startswith("text/plain;version=0.0.4")


async def test_json_format_and_templated_http_path(server: SocketServer, sock_dir: Path) -> None:
    source = await started(sock_dir, path="/load/{name}", format="json")
    try:
        payload = await source.poll(spec("pod-b"))
    finally:
        await source.close()
    assert payload == JsonDocument({"pod": "pod-b", "queue": {"waiting": 2}})


async def test_one_keep_alive_session_per_socket(server: SocketServer, sock_dir: Path) -> None:
    source = await started(sock_dir)
    try:
        for _ in range(3):
            await source.poll(spec("pod-a"))
            await source.poll(spec("pod-b"))
        assert source.session_count() == 2
        assert len(server.connections) == 2  # one connection per socket, reused
    finally:
        await source.close()
    assert source.session_count() == 0


async def test_idle_sessions_are_closed(
    server: SocketServer, sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source_module, "IDLE_SECONDS", 0.0)
    source = await started(sock_dir)
    try:
        await source.poll(spec("pod-a"))
        await source.poll(spec("pod-b"))  # pod-a's session is idle by now
        assert source.session_count() == 1
    finally:
        await source.close()


@pytest.mark.parametrize(
    ("mode", "name", "params", "fragment"),
    [
        ("ok", "pod-x", {}, "cannot connect to /"),
        ("ok", "pod-x", {}, "pod-x.sock: No such file or directory"),
        ("500", "pod-a", {}, "HTTP 500"),
        ("huge", "pod-a", {"maxBodyBytes": 1000}, "exceeds the 1000-byte limit"),
        ("ok", "pod-a", {"path": "/nope"}, "HTTP 404"),
        ("bad-json", "pod-a", {"path": "/load/{name}", "format": "json"}, "not JSON"),
        ("html", "pod-a", {}, "not a Prometheus text exposition (starts with b'<!DOCTYPE"),
        ("ok", "..", {}, "endpoint name '..' cannot be used in a path"),
    ],
)
async def test_failures_are_poll_errors_that_name_the_fault(
    server: SocketServer,
    sock_dir: Path,
    mode: str,
    name: str,
    params: dict[str, Any],
    fragment: str,
) -> None:
    server.mode = mode
    source = await started(sock_dir, **params)
    try:
        with pytest.raises(PollError) as info:
            await source.poll(spec(name))
    finally:
        await source.close()
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("parameters", "path", "fragment"),
    [
        ("{}", "socketPath", "required field is missing"),
        ("{socketPath: ''}", "socketPath", "must not be empty"),
        ("{socketPath: '/run/{pod}.sock'}", "socketPath", "unknown field {pod}"),
        ("{socketPath: '/run/{name!r}.sock'}", "socketPath", "no conversion or format"),
        ("{socketPath: '/run/{name.sock'}", "socketPath", "invalid template"),
        ("{socketPath: /s, path: metrics}", "path", "must start with '/'"),
        ("{socketPath: /s, path: '/m/{zone}'}", "path", "unknown field {zone}"),
        ("{socketPath: /s, format: xml}", "format", "expected one of"),
        ("{socketPath: /s, maxBodyBytes: 0}", "maxBodyBytes", "greater than zero"),
    ],
)
def test_parameter_errors(parameters: str, path: str, fragment: str) -> None:
    error = one_source_config_error("unix-socket-data-source", parameters)
    assert error.path == f"plugins[0].parameters.{path}"
    assert fragment in error.message


# --- end to end: mock vLLM pods that also listen on a socket, read over gRPC ---

CONFIG = """\
kind: DataLayerConfig
plugins:
- type: unix-socket-data-source
  name: uds-metrics
  parameters:
    socketPath: "@DIR@/{{name}}.sock"
- type: unix-socket-data-source
  name: uds-control
  parameters: {{socketPath: "@DIR@/{{name}}.sock", path: /control, format: json}}
- type: core-metrics-extractor
- type: json-extractor
  parameters:
    fields:
    - {{path: waiting, key: control_waiting}}
    - {{path: engines.0.running, key: engine0_running}}
- type: file-discovery
  parameters: {{path: {endpoints}, pollInterval: 50ms}}
dataLayer:
  interval: 50ms
  timeout: 300ms
  stalenessThreshold: 500ms
  sources:
  - pluginRef: uds-metrics
    extractors: [{{pluginRef: core-metrics-extractor}}]
  - pluginRef: uds-control
    interval: 100ms
    extractors: [{{pluginRef: json-extractor}}]
  discovery: {{pluginRef: file-discovery}}
"""

PODS = (PodSpec(name="pod-a"), PodSpec(name="pod-b"))


async def test_pods_on_unix_sockets_end_to_end(tmp_path: Path, sock_dir: Path) -> None:
    config = CONFIG.replace("@DIR@", str(sock_dir))
    async with running_stack(tmp_path, config, PODS) as stack:
        # pod-a also serves its routes on a socket; pod-b only on TCP, which this source ignores.
        await web.UnixSite(stack.pods[0].runner, str(sock_dir / "pod-a.sock")).start()
        await stack.control(0, {"waiting": 5, "running": 3})

        async def arrived() -> bool:
            endpoint = await stack.client.get_endpoint("pod-a")
            m = endpoint.metrics
            return (
                not endpoint.stale
                and m.waiting_queue_size == 5
                and m.custom.get("control_waiting") == 5.0
            )

        await eventually(arrived, what="pod-a's values over its socket")
        endpoint = await stack.client.get_endpoint("pod-a")
        assert endpoint.metrics.running_requests_size == 3
        assert endpoint.metrics.custom["engine0_running"] == 3.0
        assert endpoint.last_error == ""

        async def pod_b_stale() -> bool:
            endpoint = await stack.client.get_endpoint("pod-b")
            return endpoint.stale and "cannot connect to" in endpoint.last_error

        await eventually(pod_b_stale, what="pod-b stale: no socket")
        endpoint = await stack.client.get_endpoint("pod-b")
        assert f"{sock_dir}/pod-b.sock" in endpoint.last_error
