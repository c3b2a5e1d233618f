"""A small keep-alive HTTP/1.1 GET client for scrapes, on httptools (llhttp) and asyncio.

`aiohttp`'s client costs ~210-240 µs of CPU per 59 KB scrape on our machines before any
parsing; this one does only what a scrape needs (one GET, a 200, a body under a cap) and
costs a fraction of that. Everything else keeps using aiohttp (`plugins/httpfetch.py`).
"""

from plugins.fasthttp.client import (
    AVAILABLE,
    ConnectError,
    KeepAliveClient,
    PayloadError,
    ServerDisconnected,
)

__all__ = ["AVAILABLE", "ConnectError", "KeepAliveClient", "PayloadError", "ServerDisconnected"]
