"""Endpoints from a YAML file, as upstream's file discovery:

    endpoints:
    - name: vllm-0
      namespace: default
      address: 10.0.0.7
      port: 8000
      labels: {app: vllm}

The file is polled for changes (mtime, size, inode) rather than watched with
inotify: it works the same on every filesystem, including ConfigMap volumes,
whose updates are symlink swaps. A broken edit keeps the last good set.

A missing file is not an empty endpoint set. Without `watchFile` it is a
parameter error (`validate` names the file); with it, discovery waits for the
file to appear and reports nothing, not synced, until it does, so health stays
NOT_SERVING rather than SERVING zero endpoints. A relative `path` is relative to
the config file's folder (the loader resolves `FilePath` parameters).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Annotated

import msgspec
import yaml

from datalayer.model import EndpointSpec
from datalayer.parameters import (
    FilePath,
    NonEmptyStr,
    Parameters,
    Port,
    PositiveDuration,
    PositiveInt,
    decode,
)
from datalayer.plugin import Discovery, DiscoverySink, ParameterError

log = logging.getLogger(__name__)


class FileDiscoveryParameters(Parameters):
    path: Annotated[FilePath, msgspec.Meta(min_length=1)]
    watch_file: bool = True
    #: How often the file's metadata is checked for a change.
    poll_interval: PositiveDuration = 1.0
    max_bytes: PositiveInt = 4 * 1024 * 1024


class _EndpointEntry(Parameters):
    name: NonEmptyStr
    address: NonEmptyStr
    port: Port
    namespace: str = ""
    labels: dict[str, str] = {}


class _EndpointsFile(Parameters):
    endpoints: list[_EndpointEntry] = []


class EndpointsFileError(ValueError):
    """The endpoints file cannot be used; the message names the file and the problem."""


def read_endpoints_file(path: Path, max_bytes: int) -> list[EndpointSpec]:
    """Parse and validate an endpoints file (blocking: call it in a thread)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise EndpointsFileError(f"{path}: {size} bytes exceeds the {max_bytes}-byte limit")
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EndpointsFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise EndpointsFileError(f"{path}: invalid YAML: {exc}") from None
    try:
        document = decode(_EndpointsFile, data)
    except ParameterError as exc:
        raise EndpointsFileError(f"{path}: {exc}") from None
    specs: list[EndpointSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(document.endpoints):
        where = f"{path}: endpoints[{i}]"
        if entry.name in seen:
            raise EndpointsFileError(f"{where}.name: duplicate endpoint name {entry.name!r}")
        seen.add(entry.name)
        specs.append(
            EndpointSpec(entry.name, entry.address, entry.port, entry.namespace, entry.labels)
        )
    return specs


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class FileDiscovery(Discovery):
    type_name = "file-discovery"
    description = "endpoints listed in a YAML file, reloaded when the file changes"
    Parameters = FileDiscoveryParameters

    def __init__(self, name: str, params: FileDiscoveryParameters) -> None:
        super().__init__(name, params)
        self.path = Path(params.path)
        self.params: FileDiscoveryParameters = params
        #: Problems worth a warning at load time (`validate` and `serve` print them).
        self.warnings: list[str] = []
        if not self.path.exists():
            if not params.watch_file:
                raise ParameterError("path", f"{self.path}: no such file (and watchFile is off)")
            self.warnings.append(
                f"file-discovery {name!r}: {self.path} does not exist yet; "
                "serve waits for it (not SERVING until it appears)"
            )

    async def run(self, sink: DiscoverySink) -> None:
        """Report the file's endpoint set, then follow it; synced at the first good read."""
        fingerprint = _fingerprint(self.path)
        if fingerprint is None and self.params.watch_file:
            log.warning("waiting for %s to exist (no endpoints until then)", self.path)
        loaded = await self._load(sink, loaded=False)
        if not self.params.watch_file:
            return
        while True:
            await asyncio.sleep(self.params.poll_interval)
            current = _fingerprint(self.path)
            if current != fingerprint:
                fingerprint = current
                loaded = await self._load(sink, loaded)

    async def _load(self, sink: DiscoverySink, loaded: bool) -> bool:
        """Read the file into the sink; whether an endpoint set has been reported so far."""
        try:
            specs = await asyncio.to_thread(read_endpoints_file, self.path, self.params.max_bytes)
        except EndpointsFileError as exc:
            if loaded:
                log.warning("keeping the last good endpoint set: %s", exc)
            elif self.params.watch_file:
                log.warning("no endpoint set yet, waiting for a good file: %s", exc)
            else:
                log.error("no endpoints (watchFile is off, so none will come): %s", exc)
            return loaded
        log.info("loaded %d endpoints from %s", len(specs), self.path)
        await sink.replace_all(specs)
        if not loaded:
            sink.mark_synced()
        return True
