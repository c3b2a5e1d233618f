"""HTTP GETs for polling sources: one session per source instance, strict about replies.

Per instance, never process-wide, so two sources with different TLS or
timeout settings cannot affect each other (a quirk upstream has).
"""

from __future__ import annotations

import aiohttp

from plugins.shared.http.tls import ClientTls, client_ssl_context


class PollError(Exception):
    """A fetch failed in a way that names the fault (status, size)."""


def new_session(
    accept: str, timeout: float | None, tls: ClientTls | None = None
) -> aiohttp.ClientSession:
    """A keep-alive session with its own TLS context; create it inside the running loop."""
    ssl_context = client_ssl_context(tls) if tls is not None else True
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ssl=ssl_context)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers={"Accept": accept, "Accept-Encoding": "identity"},
        read_bufsize=1 << 17,
    )


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
