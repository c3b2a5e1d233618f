"""metrics-data-source against real aiohttp servers: headers, status, size cap, keep-alive."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from datalayer.model import EndpointSpec
from plugins.extractors.core_metrics.extractor import CoreMetricsExtractor
from plugins.shared.http.aio import PollError
from plugins.sources.metrics.source import MetricsDataSource, MetricsSourceParameters

PAGE = b"""# HELP vllm:num_requests_waiting Waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 4.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 9.0
"""


class PageServer:
    def __init__(self) -> None:
        self.accept: list[str] = []
        self.peers: set[int] = set()
        self.mode = "ok"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.accept.append(request.headers.get("Accept", ""))
        transport = request.transport
        if transport is not None:
            self.peers.add(transport.get_extra_info("peername")[1])
        if self.mode == "500":
            return web.Response(status=500, text="boom")
        if self.mode == "chunked-huge":
            response = web.StreamResponse()
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(20):
                await response.write(b"#" * 1000 + b"\n")
            await response.write_eof()
            return response
        if self.mode == "html":
            return web.Response(
                body=b"<!DOCTYPE html>\n<html><body><h1>502 Bad Gateway</h1></body></html>\n",
                content_type="text/html",
            )
        body = PAGE + (b"#" * 5000 if self.mode == "huge" else b"")
        return web.Response(body=body, content_type="text/plain")


@pytest.fixture
async def server() -> AsyncIterator[tuple[PageServer, int]]:
    pages = PageServer()
    app = web.Application()
    app.router.add_get("/metrics", pages.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield pages, int(runner.addresses[0][1])
    await runner.cleanup()


def make_source(**params: object) -> MetricsDataSource:
    source = MetricsDataSource("m", MetricsSourceParameters(**params))  # type: ignore[arg-type]
    source.start([CoreMetricsExtractor("core", CoreMetricsExtractor.Parameters())])
    return source


async def test_scrapes_only_wanted_names_with_keep_alive(server: tuple[PageServer, int]) -> None:
    pages, port = server
    source = make_source()
    endpoint = EndpointSpec("a", "127.0.0.1", port)
    try:
        for _ in range(5):
            samples = await source.poll(endpoint)
    finally:
        await source.close()
    assert [s.value for s in samples["vllm:num_requests_waiting"]] == [4.0]
    assert "vllm:num_requests_waiting_by_reason" not in samples
    assert pages.accept[0].startswith("text/plain;version=0.0.4")
    assert len(pages.peers) == 1  # one connection reused for all five scrapes


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("500", "HTTP 500 Internal Server Error"),
        ("huge", "exceeds the 1000-byte limit"),
        ("chunked-huge", "body exceeds the 1000-byte limit"),
        ("html", "not a Prometheus text exposition"),
    ],
)
async def test_bad_replies_are_errors_for_that_endpoint(
    server: tuple[PageServer, int], mode: str, message: str
) -> None:
    pages, port = server
    pages.mode = mode
    source = make_source(max_body_bytes=1000)
    try:
        with pytest.raises(PollError, match=message):
            await source.poll(EndpointSpec("a", "127.0.0.1", port))
    finally:
        await source.close()


def test_url_uses_port_override_and_brackets_ipv6() -> None:
    source = MetricsDataSource("m", MetricsSourceParameters(scheme="https", path="/m", port=9400))
    assert source.url_for(EndpointSpec("a", "fd00::1", 8000)) == "https://[fd00::1]:9400/m"
    assert source.url_for(EndpointSpec("a", "10.0.0.1", 8000)) == "https://10.0.0.1:9400/m"
