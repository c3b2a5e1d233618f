"""The Prometheus scrape source, shared by every extractor that reads `/metrics`.

One HTTP transport per source instance (never a process-wide client), so two
sources with different TLS or timeout settings cannot affect each other, and
keep-alive connections are reused across ticks. The page is scanned only for
the metric names the attached extractors declared: the tens of KB of histogram
buckets nobody asked for are never parsed. The body goes through the same
decoder as every other Prometheus source (`plugins.shared.payloads.BodyDecoder`),
so the exposition check and the scanner's caps are the same whatever the transport.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from datalayer.plugin import Extractor
from plugins.shared.http.aio import PollError
from plugins.shared.http.source import HttpDataSource
from plugins.shared.http.transport import HttpParameters
from plugins.shared.payloads.formats import PROMETHEUS_ACCEPT, BodyDecoder
from plugins.shared.payloads.json_document import PayloadError
from plugins.shared.prometheus.samples import MetricSamples


class MetricsSourceParameters(HttpParameters):
    #: `auto`: the httptools client for http, aiohttp for https; `aiohttp`: always aiohttp.
    http_client: Literal["auto", "aiohttp"] = "auto"


class MetricsDataSource(HttpDataSource):
    type_name = "metrics-data-source"
    description = "HTTP GET of Prometheus text /metrics, scanned only for the names extractors need"
    Parameters = MetricsSourceParameters
    output_type = MetricSamples
    #: The classic text format: OpenMetrics renames samples.
    accept = PROMETHEUS_ACCEPT

    def __init__(self, name: str, params: MetricsSourceParameters) -> None:
        super().__init__(name, params)
        self._client_choice = params.http_client
        self._decoder = BodyDecoder("prometheus")

    def client_choice(self) -> Literal["auto", "aiohttp"]:
        return self._client_choice

    def prepare(self, extractors: Sequence[Extractor]) -> None:
        self._decoder = BodyDecoder("prometheus", extractors)

    def decode(self, body: bytes) -> MetricSamples:
        try:
            return self._decoder.decode_samples(body)
        except PayloadError as exc:
            raise PollError(str(exc)) from None


class PrometheusDataSource(MetricsDataSource):
    """The same source under the name the data-layer docs use for the custom-metrics "hose"."""

    type_name = "prometheus-data-source"
    description = "the custom-metrics hose: HTTP GET of /metrics (same as metrics-data-source)"
