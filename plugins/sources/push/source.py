"""`push-data-source`: pods or a sidecar POST their load; extractors see it at once.

The data-layer proposal's event-driven source: it drives itself (`run` is its
Start, cancellation its Stop), the collector tells it its endpoints
(`update_endpoints`, the proposal's UpdateEndpoints) and it hands each payload
to the binding's extractors through the sink the moment it arrives, with no
tick in between. An endpoint that stops pushing turns stale after
`stalenessThreshold`, like a polled one that stops answering.

One format per instance (`format`), not per request: the format decides the
payload type, and the payload type is what the config loader checks the
extractors against. A source that accepted both would have to hand JSON to a
Prometheus extractor (or the reverse) on some requests, which is exactly the
mismatch the wiring check exists to rule out. A fleet that pushes both runs
two push sources on two ports. A body in the other format is refused with 415.

    POST /push/{endpoint}     Content-Type: application/json | text/plain
    204  delivered            404  not an endpoint of this source
    400  body does not parse  401  bearer token missing or wrong (when configured)
    413  body over maxBodyBytes                415  not this source's format
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final

import msgspec
from aiohttp import hdrs, web

from datalayer.model import EndpointSpec
from datalayer.parameters import FilePath, Parameters, PositiveInt
from datalayer.plugin import ParameterError, PayloadSink, PushDataSource
from plugins.shared.payloads import (
    JsonDocument,
    PayloadError,
    PayloadFormat,
    PayloadFormatMixin,
)

log = logging.getLogger(__name__)

ROUTE: Final = "/push/{endpoint}"
#: Media types accepted per format.
MEDIA_TYPES: Final[Mapping[str, frozenset[str]]] = {
    "json": frozenset({"application/json"}),
    "prometheus": frozenset({"text/plain", "application/openmetrics-text"}),
}
#: Bodies that do not say what they are (no header is read as octet-stream): the source's format.
UNSPECIFIED: Final = frozenset({"application/octet-stream"})
SHUTDOWN_TIMEOUT: Final = 1.0


class PushSourceParameters(Parameters):
    #: The address to listen on; the default accepts pushes from this host only.
    host: str = "127.0.0.1"
    #: 0 picks a free port (tests); the bound one is the source's `port` attribute.
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9003
    #: What bodies hold: `json` (payload JsonDocument) or `prometheus` (MetricSamples).
    format: PayloadFormat = "json"
    max_body_bytes: PositiveInt = 1024 * 1024
    #: A file holding a token pushers must send as `Authorization: Bearer <token>`.
    bearer_token_file: FilePath | None = None


class HttpPushDataSource(PayloadFormatMixin, PushDataSource):
    type_name = "push-data-source"
    description = (
        "an HTTP server endpoints POST their load to (/push/{endpoint}); "
        "format: json -> JsonDocument, prometheus -> MetricSamples"
    )
    Parameters = PushSourceParameters
    #: For listings: the default format's type. The wiring check uses the instance's format.
    output_type = JsonDocument

    def __init__(self, name: str, params: PushSourceParameters) -> None:
        super().__init__(name, params)
        self._token: str | None = None
        if params.bearer_token_file is not None:
            self._token = _read_token(params.bearer_token_file)
        self.payload_format = params.format
        self._params = params
        self._endpoints: dict[str, EndpointSpec] = {}
        self._sink: PayloadSink | None = None
        #: The bound port once listening (useful when `port` is 0).
        self.port: int | None = None
        #: Set while the server accepts pushes.
        self.listening = asyncio.Event()

    def update_endpoints(self, endpoints: Mapping[str, EndpointSpec]) -> None:
        self._endpoints = dict(endpoints)

    async def run(self, sink: PayloadSink) -> None:
        """Serve until cancelled, then stop accepting and release the port."""
        app = web.Application(client_max_size=self._params.max_body_bytes)
        app.router.add_post(ROUTE, self._handle)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._params.host, self._params.port)
            await site.start()
            self.port = int(runner.addresses[0][1])
            self._sink = sink
            self.listening.set()
            log.info("push source %s listening on %s:%d", self.name, self._params.host, self.port)
            await asyncio.Event().wait()  # until cancelled
        finally:
            self.listening.clear()
            self._sink = None
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        if self._token is not None and not _authorized(request, self._token):
            return _reply(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        name = request.match_info["endpoint"]
        if name not in self._endpoints:
            return _reply(404, f"{name!r} is not an endpoint of source {self.name!r}")
        accepted = MEDIA_TYPES[self.payload_format]
        if request.content_type not in accepted and request.content_type not in UNSPECIFIED:
            wanted = ", ".join(sorted(accepted))
            return _reply(415, f"this source takes {self.payload_format} ({wanted})")
        limit = self._params.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            return _reply(413, f"body of {length} bytes exceeds the {limit}-byte limit")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _reply(413, f"body exceeds the {limit}-byte limit")
        decoder = self._decoder
        if decoder is None:
            return _reply(503, f"source {self.name!r} is not started")
        try:
            payload = decoder.decode(body)
        except PayloadError as exc:
            return _reply(400, str(exc))
        sink = self._sink
        if sink is None or not sink.deliver(name, payload):
            return _reply(404, f"{name!r} is not an endpoint of source {self.name!r}")
        return web.Response(status=204)


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    # Bytes: compare_digest refuses non-ASCII str, and a header is attacker-chosen.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def _reply(status: int, text: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=headers)


def _read_token(path: str) -> str:
    """Read at configuration time, so a missing file is a config error, not a 401 later."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ParameterError("bearerTokenFile", f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ParameterError("bearerTokenFile", f"{path} is not UTF-8 text") from None
    if not token:
        raise ParameterError("bearerTokenFile", f"{path} is empty")
    return token
