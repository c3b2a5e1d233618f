"""`HttpDataSource`: an HTTP source is a declaration over the one transport seam.

A subclass declares its `type_name`, `Parameters` (a subclass of
`HttpParameters`), `output_type`, the `accept` header and how a body becomes
its payload (`decode`); fetching, URLs, TLS, caps and timeouts are the
transport's. For example, a source of a JSON status page::

    class StatusParameters(HttpParameters):
        path: UrlPath = "/status"

    class StatusSource(HttpDataSource):
        type_name = "status-data-source"
        Parameters = StatusParameters
        output_type = dict
        accept = "application/json"

        def decode(self, body: bytes) -> dict:
            return json.loads(body)
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from datalayer.model import EndpointSpec
from datalayer.plugin import Extractor, PollingDataSource
from plugins.shared.http.aio import PollError
from plugins.shared.http.transport import HttpParameters, HttpTransport


class HttpDataSource(PollingDataSource):
    """One HTTP GET per endpoint per tick, decoded into this source's payload type."""

    #: The `Accept` header of every request.
    accept: ClassVar[str]

    def __init__(self, name: str, params: HttpParameters) -> None:
        super().__init__(name, params)
        params.check()
        self.http_params = params
        self._transport: HttpTransport | None = None

    def client_choice(self) -> Literal["auto", "aiohttp"]:
        """`auto`: the httptools client for http, aiohttp for https; a source may force aiohttp."""
        return "auto"

    def start(self, extractors: Sequence[Extractor]) -> None:
        self.prepare(extractors)
        self._transport = HttpTransport(self.http_params, self.accept, self.client_choice())

    def prepare(self, extractors: Sequence[Extractor]) -> None:
        """Set up decoding for these extractors (e.g. the names to scan for); called once."""

    @property
    def client_name(self) -> str:
        """Which HTTP client fetches: `httptools` or `aiohttp` (for logs and benchmarks)."""
        if self._transport is None:
            return "httptools" if self.http_params.scheme == "http" else "aiohttp"
        return self._transport.client_name

    def target(self, endpoint: EndpointSpec) -> EndpointSpec:
        """Where `endpoint`'s payload is fetched: itself, unless a source redirects (a node's
        exporter, a metrics address label); PollError when it cannot say."""
        return endpoint

    def url_for(self, endpoint: EndpointSpec) -> str:
        return self.http_params.url_for(self.target(endpoint))

    @abc.abstractmethod
    def decode(self, body: bytes) -> Any:
        """The payload of a 200 reply's body; raise PollError when it is not one."""

    def start_poll(self, endpoint: EndpointSpec) -> asyncio.Future[Any]:
        try:
            target = self.target(endpoint)
        except PollError as exc:
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed
        return self._transport_or_fail().get(target, self.decode)

    async def poll(self, endpoint: EndpointSpec) -> Any:
        return await self.start_poll(endpoint)

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    def _transport_or_fail(self) -> HttpTransport:
        if self._transport is None:
            raise RuntimeError(f"source {self.name!r} not started")
        return self._transport
