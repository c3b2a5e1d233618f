"""`file-data-source`: a local status file per endpoint, read each tick.

For servers or node agents that write their load to a file (a status JSON a
sidecar refreshes, a Prometheus textfile-collector file) instead of serving
it. The path is a template over the endpoint's identity.

Reading happens in a worker thread (`asyncio.to_thread`): a local read takes
microseconds, but a file on a stalled network or FUSE mount can block for
seconds, and on the event loop that would stall every endpoint and every
subscriber. The price is one thread hand-off per read (tens of microseconds);
decoding stays on the loop, where the other sources decode too.

A missing, unreadable, oversize or (with `maxAge`) not recently written file is
a poll error, so the endpoint turns stale with that reason in `last_error`.
"""

from __future__ import annotations

import asyncio
import os
import time

from datalayer.model import EndpointSpec
from datalayer.parameters import FilePath, Parameters, PositiveDuration, PositiveInt
from datalayer.plugin import PollingDataSource
from plugins.shared.payloads import (
    EndpointTemplate,
    JsonDocument,
    PayloadError,
    PayloadFormat,
    PayloadFormatMixin,
    TemplateError,
)
from plugins.shared.prometheus import MetricSamples


class FileReadError(Exception):
    """The status file could not be used; the message names the file and why."""


class FileSourceParameters(Parameters):
    #: The file, templated by endpoint: `{name}`, `{namespace}`, `{address}`, `{port}`.
    path_template: FilePath
    #: `json` (payload JsonDocument) or `prometheus` (payload MetricSamples).
    format: PayloadFormat = "json"
    max_bytes: PositiveInt = 1024 * 1024
    #: A file not modified for longer than this is an error (its writer has stopped).
    max_age: PositiveDuration | None = None


class FileDataSource(PayloadFormatMixin, PollingDataSource):
    type_name = "file-data-source"
    description = (
        "a local status file per endpoint (pathTemplate); "
        "format: json -> JsonDocument, prometheus -> MetricSamples"
    )
    Parameters = FileSourceParameters
    #: For listings: the default format's type. The wiring check uses the instance's format.
    output_type = JsonDocument

    def __init__(self, name: str, params: FileSourceParameters) -> None:
        super().__init__(name, params)
        self.template = EndpointTemplate(params.path_template, "pathTemplate")
        self.payload_format = params.format
        self._params = params

    def path_for(self, endpoint: EndpointSpec) -> str:
        return self.template.render(endpoint)

    async def poll(self, endpoint: EndpointSpec) -> MetricSamples | JsonDocument:
        decoder = self._decoder
        if decoder is None:
            raise RuntimeError("source not started")
        try:
            path = self.path_for(endpoint)
        except TemplateError as exc:
            raise FileReadError(str(exc)) from None
        p = self._params
        body = await asyncio.to_thread(read_status_file, path, p.max_bytes, p.max_age)
        try:
            return decoder.decode(body)
        except PayloadError as exc:
            raise FileReadError(f"{path}: {exc}") from None


def read_status_file(path: str, max_bytes: int, max_age: float | None) -> bytes:
    """Read the whole file (blocking: run it in a thread); raise FileReadError naming why."""
    try:
        with open(path, "rb") as f:
            stat = os.fstat(f.fileno())
            if stat.st_size > max_bytes:
                raise FileReadError(f"{path} is {stat.st_size} bytes, over the {max_bytes} limit")
            if max_age is not None:
                age = time.time() - stat.st_mtime
                if age > max_age:
                    raise FileReadError(
                        f"{path} was last written {age:.1f}s ago (maxAge {max_age:g}s)"
                    )
            body = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise FileReadError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise FileReadError(f"{path} is a directory") from None
    except OSError as exc:
        raise FileReadError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(body) > max_bytes:  # grew between fstat and read
        raise FileReadError(f"{path} is over the {max_bytes}-byte limit")
    return body
