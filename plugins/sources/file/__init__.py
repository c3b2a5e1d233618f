"""`file-data-source`: a local status file per endpoint (JSON or Prometheus text)."""

from __future__ import annotations

from datalayer.registry import Registry
from plugins.sources.file.source import FileDataSource, FileSourceParameters, read_status_file


def register(registry: Registry) -> None:
    """Add `file-data-source` to `registry` (called from `plugins.register`)."""
    registry.register(FileDataSource)


__all__ = ["FileDataSource", "FileSourceParameters", "read_status_file", "register"]
