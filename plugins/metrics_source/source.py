"""The Prometheus scrape source, shared by every extractor that reads `/metrics`.

One aiohttp session per source instance (never a process-wide one), so two
sources with different TLS or timeout settings cannot affect each other, and
keep-alive connections are reused across ticks. The page is scanned only for
the metric names the attached extractors declared (BRIEF §2): the tens of KB
of histogram buckets nobody asked for are never parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import aiohttp

from datalayer.model import EndpointSpec
from datalayer.params import Duration
from datalayer.plugin import ParameterError, PollingDataSource
from plugins.prometheus.samples import MetricSamples
from plugins.prometheus.scan import SelectiveScanner

#: Always ask for the classic text format: OpenMetrics renames samples (BRIEF, MODEL-SERVERS).
ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"


class PollError(Exception):
    """A scrape failed in a way that names the fault (status, size)."""


@dataclass
class MetricsSourceParameters:
    scheme: Literal["http", "https"] = "http"
    path: str = "/metrics"
    #: Scrape this port instead of the endpoint's own (e.g. a metrics sidecar).
    port: int | None = None
    #: Per-request timeout inside the collector's poll timeout; unset = the collector's.
    timeout: Duration | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    insecure_skip_verify: bool = False


class MetricsDataSource(PollingDataSource):
    type_name = "metrics-data-source"
    description = "HTTP GET of Prometheus text /metrics, scanned only for the names extractors need"
    Parameters = MetricsSourceParameters
    output_type = MetricSamples

    def __init__(self, name: str, params: MetricsSourceParameters) -> None:
        super().__init__(name, params)
        if not params.path.startswith("/"):
            raise ParameterError("path", f"must start with '/', got {params.path!r}")
        if params.port is not None and not 0 < params.port < 65536:
            raise ParameterError("port", f"must be 1..65535, got {params.port}")
        if params.max_body_bytes <= 0:
            raise ParameterError("maxBodyBytes", "must be greater than zero")
        self._params = params
        self._session: aiohttp.ClientSession | None = None
        self._scanner = SelectiveScanner(())

    def start(self) -> None:
        names: set[str] = set()
        for extractor in self.extractors:
            names |= extractor.required_names()
        self._scanner = SelectiveScanner(names)
        connector = aiohttp.TCPConnector(
            limit=0,
            keepalive_timeout=30,
            ssl=not self._params.insecure_skip_verify,
        )
        timeout = aiohttp.ClientTimeout(total=self._params.timeout)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers={"Accept": ACCEPT, "Accept-Encoding": "identity"},
            read_bufsize=1 << 17,
        )

    def url_for(self, endpoint: EndpointSpec) -> str:
        port = self._params.port or endpoint.port
        host = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
        return f"{self._params.scheme}://{host}:{port}{self._params.path}"

    async def poll(self, endpoint: EndpointSpec) -> MetricSamples:
        if self._session is None:
            raise RuntimeError("source not started")
        body = await fetch_body(self._session, self.url_for(endpoint), self._params.max_body_bytes)
        return self._scanner.scan(body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def fetch_body(session: aiohttp.ClientSession, url: str, max_bytes: int) -> bytes:
    """GET `url`; a non-200 status or a body over `max_bytes` is a PollError."""
    async with session.get(url) as response:
        if response.status != 200:
            raise PollError(f"HTTP {response.status} {response.reason or ''}".rstrip())
        length = response.content_length
        if length is not None and length > max_bytes:
            raise PollError(f"body of {length} bytes exceeds the {max_bytes}-byte limit")
        if length is not None:
            return await response.read()
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > max_bytes:
                raise PollError(f"body exceeds the {max_bytes}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)
