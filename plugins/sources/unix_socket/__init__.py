"""`unix-socket-data-source`: HTTP payloads (Prometheus or JSON) over a Unix socket."""

from __future__ import annotations

from datalayer.registry import Registry
from plugins.sources.unix_socket.source import UnixSocketDataSource, UnixSocketSourceParameters


def register(registry: Registry) -> None:
    """Add `unix-socket-data-source` to `registry` (called from `plugins.register`)."""
    registry.register(UnixSocketDataSource)


__all__ = ["UnixSocketDataSource", "UnixSocketSourceParameters", "register"]
