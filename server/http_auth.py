"""The metrics port's access rule: the status pages are guarded like gRPC is.

`/status` and `/status.json` show every endpoint's data, the same data gRPC
serves, so when gRPC needs a bearer token they need the same token; `/metrics`
carries only the service's own counters and stays open for scrapers. A
browser cannot add an `Authorization: Bearer` header by itself, so HTTP Basic
with the token as the password (any user name) is accepted too: the browser
shows its own login prompt on the 401 and resends the credentials with every
`/status.json` refresh. TLS for this port (same certificate, same client-CA
rule as gRPC) is set up by the app with :func:`server.security.http_ssl_context`,
so the token never crosses the network in clear when gRPC uses TLS.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

#: Paths served without a token: self-metrics only, no endpoint data.
OPEN_PATHS = frozenset({"/metrics"})
REALM = "datalayer status"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _token_given(header: str) -> bytes | None:
    """The token in `Bearer <t>` or `Basic base64(user:<t>)`; None when neither parses."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value.encode()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        _, colon, password = decoded.partition(b":")
        return password if colon else None
    return None


def status_auth_middleware(token: str | None) -> Middleware:
    """An aiohttp middleware requiring `token` on every path but :data:`OPEN_PATHS`.

    With no token it lets everything through (the pages are open when gRPC is).
    Checked in constant time; a refusal is 401 with both challenges, Basic first so
    browsers prompt.
    """
    expected = token.encode() if token else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is None or request.path in OPEN_PATHS:
            return await handler(request)
        given = _token_given(request.headers.get("Authorization", ""))
        if given is not None and hmac.compare_digest(given, expected):
            return await handler(request)
        response = web.Response(
            status=401,
            text="the status pages need the service's token: send `Authorization: Bearer "
            "<token>`, or log in with any user name and the token as the password\n",
        )
        response.headers.add("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
        response.headers.add("WWW-Authenticate", f'Bearer realm="{REALM}"')
        response.headers["Cache-Control"] = "no-store"
        return response

    return middleware
