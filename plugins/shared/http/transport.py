"""The one HTTP seam every HTTP source polls through.

`HttpTransport` owns what the HTTP sources used to write out each for itself:
the URL (scheme, the endpoint's address bracketed for IPv6, a port override,
the path), the client (the httptools fast path for `http`, an aiohttp session
for `https` or when asked), TLS, the body size cap and the per-request timeout.
A source only says what to ask for (`accept`) and how to read the body
(`decode`); see `plugins/shared/http/source.py`.

>>> async def models(transport: HttpTransport, endpoint: EndpointSpec) -> object:  # doctest: +SKIP
...     return await transport.get(endpoint, json.loads)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal, TypeVar

import aiohttp

from datalayer.model import EndpointSpec, host_port
from datalayer.parameters import Duration, FilePath, Parameters, Port, PositiveInt, UrlPath
from datalayer.plugin import ParameterError
from plugins.shared.http.aio import fetch_body, new_session
from plugins.shared.http.fast import KeepAliveClient
from plugins.shared.http.tls import ClientTls, check_client_tls

_T = TypeVar("_T")


class HttpParameters(Parameters):
    """The parameters every HTTP source shares (upstream's names, camelCase in YAML)."""

    scheme: Literal["http", "https"] = "http"
    path: UrlPath = "/metrics"
    #: Scrape this port instead of the endpoint's own (e.g. a metrics sidecar).
    port: Port | None = None
    #: Per-request timeout inside the collector's poll timeout; unset = the collector's.
    timeout: Duration | None = None
    max_body_bytes: PositiveInt = 16 * 1024 * 1024
    insecure_skip_verify: bool = False
    #: HTTPS: a PEM bundle of CAs to trust, and a client certificate and key (mTLS).
    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None
    #: Upstream's names for the same three files, accepted so an EPP user's file loads as is.
    ca_cert_path: FilePath | None = None
    client_cert_path: FilePath | None = None
    client_key_path: FilePath | None = None

    def check(self) -> None:
        """Raise ParameterError for files that are not there or named twice (bounds are the
        model's)."""
        for ours, theirs, a, b in (
            ("caFile", "caCertPath", self.ca_file, self.ca_cert_path),
            ("certFile", "clientCertPath", self.cert_file, self.client_cert_path),
            ("keyFile", "clientKeyPath", self.key_file, self.client_key_path),
        ):
            if a is not None and b is not None:
                raise ParameterError(theirs, f"{ours} and {theirs} name the same file: set one")
        check_client_tls(self.tls)

    def url_for(self, endpoint: EndpointSpec) -> str:
        """The URL of this path on `endpoint` (its address bracketed when IPv6)."""
        return (
            f"{self.scheme}://{host_port(endpoint.address, self.port or endpoint.port)}{self.path}"
        )

    @property
    def tls(self) -> ClientTls:
        return ClientTls(
            self.ca_file or self.ca_cert_path,
            self.cert_file or self.client_cert_path,
            self.key_file or self.client_key_path,
            self.insecure_skip_verify,
        )


class HttpTransport:
    """GETs of one path on every endpoint of one source instance; nothing shared beyond it.

    Create it inside the running event loop (at the source's `start`).
    """

    def __init__(
        self,
        params: HttpParameters,
        accept: str,
        client: Literal["auto", "aiohttp"] = "auto",
    ) -> None:
        self._params = params
        self._fast: KeepAliveClient | None = None
        self._session: aiohttp.ClientSession | None = None
        if params.scheme == "http" and client == "auto":
            self._fast = KeepAliveClient(params.path, accept=accept, timeout=params.timeout)
        else:
            self._session = new_session(accept, params.timeout, params.tls)

    @property
    def client_name(self) -> str:
        """Which HTTP client fetches: `httptools` or `aiohttp` (for logs and benchmarks)."""
        return "httptools" if self._fast is not None else "aiohttp"

    def get(self, endpoint: EndpointSpec, decode: Callable[[bytes], _T]) -> asyncio.Future[_T]:
        """`decode` of the body of a 200 reply from `endpoint`, as a future (no task on the
        fast path); a PollError, OSError or TimeoutError otherwise."""
        p = self._params
        if self._fast is not None:
            port = p.port or endpoint.port
            return self._fast.start_get(endpoint.address, port, p.max_body_bytes, decode)
        return asyncio.ensure_future(self._aio_get(endpoint, decode))

    async def _aio_get(self, endpoint: EndpointSpec, decode: Callable[[bytes], _T]) -> _T:
        if self._session is None:
            raise RuntimeError("transport closed")
        body = await fetch_body(
            self._session, self._params.url_for(endpoint), self._params.max_body_bytes
        )
        return decode(body)

    async def close(self) -> None:
        if self._fast is not None:
            await self._fast.close()
            self._fast = None
        if self._session is not None:
            await self._session.close()
            self._session = None
