"""`unix-socket-data-source`: the same HTTP scrape, over a Unix domain socket per endpoint.

For model servers or sidecars that listen on a socket on the node rather than
on a pod IP (`vllm serve --uds`, a metrics agent beside the server). The
socket path and the HTTP path are templates over the endpoint's identity.

aiohttp binds a `UnixConnector` to one socket path, so there is one keep-alive
session per socket path, created on first use inside the loop. Sessions idle
for `IDLE_SECONDS` are closed on a later poll, so endpoint churn does not
accumulate sessions. Replies are held to the same rules as the TCP sources
(`httpfetch.fetch_body`: 200 only, a size cap).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

import aiohttp

from datalayer.model import EndpointSpec
from datalayer.parameters import Duration, FilePath, Parameters, PositiveInt, UrlPath
from datalayer.plugin import PollingDataSource
from plugins.shared.http.aio import PollError, fetch_body
from plugins.shared.payloads import (
    EndpointTemplate,
    JsonDocument,
    PayloadError,
    PayloadFormat,
    PayloadFormatMixin,
    TemplateError,
    accept_header,
)
from plugins.shared.prometheus import MetricSamples

#: A socket path's session unused this long is closed (its endpoint is probably gone).
IDLE_SECONDS: Final = 120.0


class UnixSocketSourceParameters(Parameters):
    #: The socket, templated by endpoint: `{name}`, `{namespace}`, `{address}`, `{port}`.
    socket_path: FilePath
    #: The HTTP path asked for over the socket; templated the same way.
    path: UrlPath = "/metrics"
    #: `prometheus` (payload MetricSamples) or `json` (payload JsonDocument).
    format: PayloadFormat = "prometheus"
    #: Per-request timeout inside the collector's poll timeout; unset = the collector's.
    timeout: Duration | None = None
    max_body_bytes: PositiveInt = 16 * 1024 * 1024


@dataclass(slots=True)
class _Session:
    session: aiohttp.ClientSession
    last_used: float


class UnixSocketDataSource(PayloadFormatMixin, PollingDataSource):
    type_name = "unix-socket-data-source"
    description = (
        "HTTP GET over a Unix socket per endpoint (socketPath template); "
        "format: prometheus -> MetricSamples, json -> JsonDocument"
    )
    Parameters = UnixSocketSourceParameters
    #: For listings: the default format's type. The wiring check uses the instance's format.
    output_type = MetricSamples

    def __init__(self, name: str, params: UnixSocketSourceParameters) -> None:
        super().__init__(name, params)
        self.socket_template = EndpointTemplate(params.socket_path, "socketPath")
        self.path_template = EndpointTemplate(params.path, "path")
        self.payload_format = params.format
        self._params = params
        self._sessions: dict[str, _Session] = {}
        self._next_sweep = 0.0

    async def poll(self, endpoint: EndpointSpec) -> MetricSamples | JsonDocument:
        decoder = self._decoder
        if decoder is None:
            raise RuntimeError("source not started")
        try:
            socket_path = self.socket_template.render(endpoint)
            url = "http://localhost" + self.path_template.render(endpoint)
        except TemplateError as exc:
            raise PollError(str(exc)) from None
        now = asyncio.get_running_loop().time()
        if now >= self._next_sweep:
            self._next_sweep = now + IDLE_SECONDS / 4
            await self._close_idle(now)
        entry = self._session_for(socket_path, now)
        try:
            body = await fetch_body(entry.session, url, self._params.max_body_bytes)
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or str(exc.os_error)
            raise PollError(f"cannot connect to {socket_path}: {reason}") from None
        finally:
            entry.last_used = asyncio.get_running_loop().time()
        try:
            return decoder.decode(body)
        except PayloadError as exc:
            raise PollError(str(exc)) from None

    def _session_for(self, socket_path: str, now: float) -> _Session:
        entry = self._sessions.get(socket_path)
        if entry is None:
            connector = aiohttp.UnixConnector(path=socket_path, limit=0, keepalive_timeout=30)
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._params.timeout),
                headers={"Accept": accept_header(self.payload_format)},
                read_bufsize=1 << 17,
            )
            entry = self._sessions[socket_path] = _Session(session, now)
        entry.last_used = now
        return entry

    async def _close_idle(self, now: float) -> None:
        idle = [p for p, e in self._sessions.items() if now - e.last_used > IDLE_SECONDS]
        closing = [self._sessions.pop(p).session for p in idle]
        for session in closing:
            await session.close()

    def session_count(self) -> int:
        """Open sessions (one per socket path in use); for tests and status pages."""
        return len(self._sessions)

    async def close(self) -> None:
        sessions = [e.session for e in self._sessions.values()]
        self._sessions.clear()
        for session in sessions:
            await session.close()
