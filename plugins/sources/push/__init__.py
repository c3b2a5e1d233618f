"""`push-data-source`: an event-driven source that endpoints POST their load to."""

from __future__ import annotations

from datalayer.registry import Registry
from plugins.sources.push.source import HttpPushDataSource, PushSourceParameters


def register(registry: Registry) -> None:
    """Add `push-data-source` to `registry` (called from `plugins.register`)."""
    registry.register(HttpPushDataSource)


__all__ = ["HttpPushDataSource", "PushSourceParameters", "register"]
