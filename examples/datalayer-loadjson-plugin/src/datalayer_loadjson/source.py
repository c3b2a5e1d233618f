"""`load-json-data-source`: GET a pod's JSON load report (`/load` by default) every tick.

The payload is a `LoadReport`: the top-level numbers of the report's JSON
object. Its own class, so the service's config loader can refuse wiring this
source to an extractor that expects something else (and the reverse).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import aiohttp

from datalayer.model import EndpointSpec
from datalayer.parameters import Duration, Parameters, Port, PositiveInt, UrlPath
from datalayer.plugin import Extractor, PollingDataSource


class LoadReportError(Exception):
    """The reply was not a usable load report; the message says why (shown as last_error)."""


class LoadReport(Mapping[str, float]):
    """The numeric top-level members of a load report: `{"queue": 3, "busy": 0.5}`."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, float]) -> None:
        self._values = dict(values)

    @classmethod
    def from_json(cls, body: bytes) -> LoadReport:
        try:
            document: Any = json.loads(body)
        except ValueError as exc:
            raise LoadReportError(f"not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise LoadReportError("a load report must be a JSON object")
        return cls(
            {
                str(key): float(value)
                for key, value in document.items()
                if isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            }
        )

    def __getitem__(self, key: str) -> float:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"LoadReport({self._values!r})"


class LoadJsonSourceParameters(Parameters):
    """Bounds are constraints on the fields: the service checks them when it loads the YAML."""

    scheme: Literal["http", "https"] = "http"
    path: UrlPath = "/load"
    #: Ask this port instead of the endpoint's own (e.g. a load-reporting sidecar).
    port: Port | None = None
    timeout: Duration | None = None
    max_body_bytes: PositiveInt = 64 * 1024


class LoadJsonDataSource(PollingDataSource):
    type_name = "load-json-data-source"
    description = "example third-party source: GET a JSON load report (/load) per endpoint"
    Parameters = LoadJsonSourceParameters
    output_type = LoadReport

    def __init__(self, name: str, params: LoadJsonSourceParameters) -> None:
        super().__init__(name, params)
        self._params = params
        self._session: aiohttp.ClientSession | None = None

    def start(self, extractors: Sequence[Extractor]) -> None:
        # One keep-alive session per source instance, created inside the running loop.
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._params.timeout),
            headers={"Accept": "application/json"},
        )

    async def poll(self, endpoint: EndpointSpec) -> LoadReport:
        if self._session is None:
            raise RuntimeError("source not started")
        p = self._params
        host = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
        url = f"{p.scheme}://{host}:{p.port or endpoint.port}{p.path}"
        async with self._session.get(url) as response:
            if response.status != 200:
                raise LoadReportError(f"HTTP {response.status}")
            body = await _read_capped(response, p.max_body_bytes)
        return LoadReport.from_json(body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, refusing more than `limit` bytes (a report is small; a page is not)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise LoadReportError(f"report over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
