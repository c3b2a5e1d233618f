"""The Prometheus scrape source, shared by every extractor that reads `/metrics`.

One HTTP client per source instance (never a process-wide one), so two
sources with different TLS or timeout settings cannot affect each other, and
keep-alive connections are reused across ticks. For `http` the client is the
small httptools one (`plugins/shared/http`, a fraction of aiohttp's CPU per
scrape) when httptools is installed; `https`, or `httpClient: aiohttp`, uses
an aiohttp session. The page is scanned only for the metric names the
attached extractors declared (BRIEF §2): the tens of KB of histogram buckets
nobody asked for are never parsed. The body goes through the same decoder as
every other Prometheus source (`plugins.shared.payloads.BodyDecoder`), so the
exposition check and the scanner's caps are the same whatever the transport.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

import aiohttp

from datalayer.model import EndpointSpec
from datalayer.params import Duration, FilePath
from datalayer.plugin import ParameterError, PollingDataSource
from plugins.shared.http import AVAILABLE as FAST_HTTP_AVAILABLE
from plugins.shared.http import KeepAliveClient
from plugins.shared.http.aio import PollError, fetch_body, new_session
from plugins.shared.http.tls import ClientTls, check_client_tls
from plugins.shared.payloads.formats import BodyDecoder
from plugins.shared.payloads.json_document import PayloadError
from plugins.shared.prometheus.samples import MetricSamples

#: Always ask for the classic text format: OpenMetrics renames samples (BRIEF, MODEL-SERVERS).
ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"


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
    #: HTTPS: a PEM bundle of CAs to trust, and a client certificate and key (mTLS).
    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    #: `auto`: the httptools client for http when installed, else aiohttp; `aiohttp`: always.
    http_client: Literal["auto", "aiohttp"] = "auto"


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
        check_client_tls(_tls(params))
        self._params = params
        self._session: aiohttp.ClientSession | None = None
        self._client: KeepAliveClient | None = None
        self._decoder = BodyDecoder("prometheus")

    def start(self) -> None:
        self._decoder = BodyDecoder("prometheus", self.extractors)
        p = self._params
        if p.scheme == "http" and p.http_client == "auto" and FAST_HTTP_AVAILABLE:
            self._client = KeepAliveClient(p.path, accept=ACCEPT, timeout=p.timeout)
        else:
            self._session = new_session(ACCEPT, p.timeout, _tls(p))

    @property
    def client_name(self) -> str:
        """Which HTTP client scrapes: `httptools` or `aiohttp` (for logs and benchmarks)."""
        return "httptools" if self._client is not None else "aiohttp"

    def url_for(self, endpoint: EndpointSpec) -> str:
        port = self._params.port or endpoint.port
        host = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
        return f"{self._params.scheme}://{host}:{port}{self._params.path}"

    def start_poll(self, endpoint: EndpointSpec) -> asyncio.Future[MetricSamples]:
        """On the httptools client a scrape is a future finished by the protocol's callbacks:
        no task per scrape (see `KeepAliveClient.start_get`)."""
        client = self._client
        if client is None:
            return asyncio.ensure_future(self.poll(endpoint))
        port = self._params.port or endpoint.port
        return client.start_get(endpoint.address, port, self._params.max_body_bytes, self._decode)

    def _decode(self, body: bytes) -> MetricSamples:
        try:
            return self._decoder.decode_samples(body)
        except PayloadError as exc:
            raise PollError(str(exc)) from None

    async def poll(self, endpoint: EndpointSpec) -> MetricSamples:
        client = self._client
        if client is not None:
            body = await client.get(
                endpoint.address, self._params.port or endpoint.port, self._params.max_body_bytes
            )
        elif self._session is not None:
            body = await fetch_body(
                self._session, self.url_for(endpoint), self._params.max_body_bytes
            )
        else:
            raise RuntimeError("source not started")
        return self._decode(body)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._session is not None:
            await self._session.close()
            self._session = None


def _tls(params: MetricsSourceParameters) -> ClientTls:
    return ClientTls(params.ca_file, params.cert_file, params.key_file, params.insecure_skip_verify)


class PrometheusDataSource(MetricsDataSource):
    """The same source under the name the data-layer docs use for the custom-metrics "hose"."""

    type_name = "prometheus-data-source"
    description = "the custom-metrics hose: HTTP GET of /metrics (same as metrics-data-source)"
