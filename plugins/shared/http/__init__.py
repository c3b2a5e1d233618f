"""The HTTP transports of the HTTP sources, and their TLS settings.

fast.py  a small keep-alive HTTP/1.1 GET client on httptools (llhttp): what a scrape
         needs (one GET, a 200, a body under a cap) at a fraction of aiohttp's CPU
aio.py   aiohttp sessions: https, and anything the fast client does not do
tls.py   per-source client TLS (CA file, client certificate, insecureSkipVerify)
"""

from plugins.shared.http.fast import (
    AVAILABLE,
    ConnectError,
    KeepAliveClient,
    PayloadError,
    ServerDisconnected,
)

__all__ = ["AVAILABLE", "ConnectError", "KeepAliveClient", "PayloadError", "ServerDisconnected"]
