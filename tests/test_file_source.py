"""file-data-source: per-endpoint status files, read off the loop, and end to end over gRPC."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import decode
from mockpod.spec import PodSpec
from plugins.extractors.prometheus_metric.extractor import (
    PrometheusMetricExtractor,
    PrometheusMetricParameters,
)
from plugins.shared.payloads import JsonDocument
from plugins.shared.prometheus import MetricSamples
from plugins.sources.file.source import FileDataSource, FileReadError, FileSourceParameters

from stack import JSON_EXTRACTOR, eventually, one_source_config_error, running_stack

POD = EndpointSpec("pod-a", "10.0.0.1", 8000, namespace="ns1")


def make(tmp_path: Path, **params: Any) -> FileDataSource:
    params.setdefault("pathTemplate", f"{tmp_path}/{{namespace}}/{{name}}.json")
    source = FileDataSource("files", decode(FileSourceParameters, params, "parameters"))
    source.start([])
    return source


def write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)


async def test_json_status_file_by_namespace_and_name(tmp_path: Path) -> None:
    write(tmp_path / "ns1" / "pod-a.json", '{"queue": 3}')
    payload = await make(tmp_path).poll(POD)
    assert payload == JsonDocument({"queue": 3})


async def test_prometheus_textfile_is_scanned_for_the_extractors_names(tmp_path: Path) -> None:
    write(tmp_path / "pod-a.prom", "load 4\nother 9\n")
    params = {"pathTemplate": f"{tmp_path}/{{name}}.prom", "format": "prometheus"}
    source = FileDataSource("files", decode(FileSourceParameters, params))
    load = PrometheusMetricExtractor("load", PrometheusMetricParameters(metric_name="load"))
    source.start([load])
    payload = await source.poll(POD)
    assert isinstance(payload, MetricSamples)
    assert set(payload) == {"load"}
    out = EndpointUpdate()
    load.extract(payload, POD, out)
    assert out.custom == {"load": 4.0}


@pytest.mark.parametrize(
    ("content", "params", "fragment"),
    [
        (None, {}, "pod-a.json does not exist"),
        ("{", {}, "pod-a.json: not JSON"),
        ("x" * 101, {"maxBytes": 100}, "is 101 bytes, over the 100 limit"),
        ("{}", {"maxAge": "1s"}, "was last written 60.0s ago (maxAge 1s)"),
    ],
)
async def test_unusable_files_are_poll_errors(
    tmp_path: Path, content: str | None, params: dict[str, Any], fragment: str
) -> None:
    path = tmp_path / "ns1" / "pod-a.json"
    if content is not None:
        write(path, content)
        old = time.time() - 60
        os.utime(path, (old, old))
    with pytest.raises(FileReadError) as info:
        await make(tmp_path, **params).poll(POD)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (
            b"<!DOCTYPE html>\n<html><body><h1>502 Bad Gateway</h1></body></html>\n",
            "not a Prometheus text exposition",
        ),
        (b"", "empty body"),
        (b'{"error": "upstream down"}', "not a Prometheus text exposition"),
    ],
)
async def test_a_textfile_that_is_not_an_exposition_is_a_failed_read(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    """The exposition check runs on the file path too, not only in metrics-data-source."""
    write(tmp_path / "pod-a.prom", content)
    params = {"pathTemplate": f"{tmp_path}/{{name}}.prom", "format": "prometheus"}
    source = FileDataSource("files", decode(FileSourceParameters, params))
    source.start(
        [PrometheusMetricExtractor("load", PrometheusMetricParameters(metric_name="load"))]
    )
    with pytest.raises(FileReadError) as info:
        await source.poll(POD)
    assert fragment in str(info.value)
    assert "pod-a.prom" in str(info.value)


async def test_a_directory_and_an_unsafe_name_are_errors(tmp_path: Path) -> None:
    (tmp_path / "ns1" / "pod-a.json").mkdir(parents=True)
    with pytest.raises(FileReadError, match="is a directory"):
        await make(tmp_path).poll(POD)
    with pytest.raises(FileReadError, match="endpoint name 'a/b' cannot be used in a path"):
        await make(tmp_path).poll(EndpointSpec("a/b", "10.0.0.1", 1, namespace="ns1"))


async def test_reads_happen_off_the_event_loop(tmp_path: Path) -> None:
    """A FIFO with no writer blocks `open`: read on the loop, it would freeze everything."""
    fifo = tmp_path / "ns1" / "pod-a.json"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    source = make(tmp_path)
    # The writer unblocks the read after 0.5 s whatever happens, so a blocking read fails
    # the timing assertion below instead of hanging the test.
    writer = threading.Timer(0.5, lambda: fifo.write_text('{"q": 1}'))
    writer.daemon = True
    writer.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = asyncio.create_task(source.poll(POD))
    try:
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert loop.time() - started < 0.4, "the loop was blocked by the read"
        assert not poll.done()
        async with asyncio.timeout(5):
            payload = await poll
    finally:
        poll.cancel()
        await asyncio.to_thread(writer.join, 5)
    assert payload == JsonDocument({"q": 1})


@pytest.mark.parametrize(
    ("parameters", "path", "fragment"),
    [
        ("{}", "pathTemplate", "required field is missing"),
        ("{pathTemplate: '/s/{pod}.json'}", "pathTemplate", "unknown field {pod}"),
        ("{pathTemplate: /s, maxBytes: 0}", "maxBytes", "greater than zero"),
        ("{pathTemplate: /s, maxAge: 0s}", "maxAge", "greater than zero"),
        ("{pathTemplate: /s, format: yaml}", "format", "expected one of"),
    ],
)
def test_parameter_errors(parameters: str, path: str, fragment: str) -> None:
    error = one_source_config_error(
        "file-data-source",
        parameters,
        JSON_EXTRACTOR,
    )
    assert error.path == f"plugins[0].parameters.{path}"
    assert fragment in error.message


# --- end to end: a sidecar writes status files, a scheduler reads them over gRPC ---

CONFIG = """\
kind: DataLayerConfig
plugins:
- type: file-data-source
  parameters: {{pathTemplate: "@DIR@/{{name}}.json"}}
- type: json-extractor
  parameters:
    fields:
    - {{path: load.queue, key: queue}}
    - {{path: ready}}
- type: file-discovery
  parameters: {{path: {endpoints}, pollInterval: 50ms}}
dataLayer:
  interval: 50ms
  stalenessThreshold: 400ms
  sources:
  - pluginRef: file-data-source
    extractors: [{{pluginRef: json-extractor}}]
  discovery: {{pluginRef: file-discovery}}
"""


def write_status(directory: Path, name: str, document: Any) -> None:
    tmp = directory / f".{name}.tmp"
    tmp.write_text(json.dumps(document))
    tmp.replace(directory / f"{name}.json")  # atomic, as a sidecar should write it


async def test_status_files_end_to_end(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.mkdir()
    write_status(status, "pod-a", {"load": {"queue": 7}, "ready": True})
    config = CONFIG.replace("@DIR@", str(status))
    async with running_stack(tmp_path, config, (PodSpec(name="pod-a"), PodSpec(name="pod-b"))) as (
        stack
    ):

        async def read(name: str, queue: float) -> bool:
            endpoint = await stack.client.get_endpoint(name)
            return not endpoint.stale and endpoint.metrics.custom.get("queue") == queue

        await eventually(lambda: read("pod-a", 7.0), what="pod-a's status file")
        assert (await stack.client.get_endpoint("pod-a")).metrics.custom["ready"] == 1.0

        async def pod_b_missing() -> bool:
            endpoint = await stack.client.get_endpoint("pod-b")
            return endpoint.stale and "pod-b.json does not exist" in endpoint.last_error

        await eventually(pod_b_missing, what="pod-b stale, with the missing file as reason")
        write_status(status, "pod-b", {"load": {"queue": 2}, "ready": False})
        await eventually(lambda: read("pod-b", 2.0), what="pod-b fresh once its file exists")
        write_status(status, "pod-a", {"load": {"queue": 1}, "ready": True})
        await eventually(lambda: read("pod-a", 1.0), what="pod-a's rewritten file")
