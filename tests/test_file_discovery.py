"""file-discovery against real files: initial load, reload on change, broken edits kept out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from datalayer.model import EndpointSpec
from datalayer.parameters import Duration
from plugins.discovery.file.discovery import (
    EndpointsFileError,
    FileDiscovery,
    FileDiscoveryParameters,
    read_endpoints_file,
)


class RecordingSink:
    def __init__(self) -> None:
        self.sets: list[list[str]] = []
        self.specs: dict[str, EndpointSpec] = {}
        self.synced = asyncio.Event()
        self.changed = asyncio.Event()

    async def upsert(self, spec: EndpointSpec) -> None:
        self.specs[spec.name] = spec

    async def delete(self, name: str) -> None:
        self.specs.pop(name, None)

    async def replace_all(self, specs: Sequence[EndpointSpec]) -> None:
        self.specs = {s.name: s for s in specs}
        self.sets.append([s.name for s in specs])
        self.changed.set()

    def mark_synced(self) -> None:
        self.synced.set()


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


async def test_loads_then_follows_changes_and_keeps_last_good_set(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "endpoints.yaml"
    write(path, "endpoints:\n- {name: a, address: 10.0.0.1, port: 8000, labels: {app: vllm}}\n")
    discovery = FileDiscovery(
        "files", FileDiscoveryParameters(str(path), poll_interval=Duration(0.02))
    )
    sink = RecordingSink()
    task = asyncio.create_task(discovery.run(sink))
    try:
        await asyncio.wait_for(sink.synced.wait(), 2)
        assert sink.sets == [["a"]]
        assert sink.specs["a"] == EndpointSpec("a", "10.0.0.1", 8000, "", {"app": "vllm"})

        sink.changed.clear()
        write(path, "endpoints:\n- {name: b, address: 10.0.0.2, port: 8001, namespace: ns}\n")
        await asyncio.wait_for(sink.changed.wait(), 2)
        assert sink.sets[-1] == ["b"]

        with caplog.at_level(logging.WARNING):
            write(path, "endpoints:\n- {name: c, address: 10.0.0.3}\n")  # no port
            await asyncio.sleep(0.2)
        assert sink.sets[-1] == ["b"]
        assert "keeping the last good endpoint set" in caplog.text
        assert "endpoints[0].port: required field is missing" in caplog.text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("endpoints: [", "invalid YAML"),
        ("endpoints:\n- {name: a, address: x, port: 0}\n", "endpoints[0].port: must be 1..65535"),
        (
            "endpoints:\n- {name: a, address: x, port: 1}\n- {name: a, address: y, port: 2}\n",
            "endpoints[1].name: duplicate endpoint name 'a'",
        ),
        ("endpoints:\n- {name: a, address: x, port: 1, zone: z}\n", "endpoints[0].zone: unknown"),
        ("pods: []\n", "pods: unknown field"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "e.yaml"
    path.write_text(text)
    with pytest.raises(EndpointsFileError) as info:
        read_endpoints_file(path, 1 << 20)
    assert str(info.value).startswith(str(path))
    assert fragment in str(info.value)


def test_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text("endpoints: []\n" + "#" * 2000)
    with pytest.raises(EndpointsFileError, match="exceeds the 1000-byte limit"):
        read_endpoints_file(path, 1000)


def test_a_missing_file_without_watching_is_a_parameter_error(tmp_path: Path) -> None:
    """Nothing would ever fill the endpoint set: refuse at load (validate says so)."""
    from datalayer.plugin import ParameterError

    missing = tmp_path / "nope.yaml"
    with pytest.raises(ParameterError) as info:
        FileDiscovery("files", FileDiscoveryParameters(str(missing), watch_file=False))
    assert info.value.field == "path"
    assert str(missing) in info.value.message


async def test_a_missing_watched_file_is_waited_for_not_synced_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With watchFile the file may appear later: until then there is no endpoint set (not an
    empty one), so the sink is not synced and nothing claims a 'last good set'."""
    path = tmp_path / "later.yaml"
    discovery = FileDiscovery(
        "files", FileDiscoveryParameters(str(path), poll_interval=Duration(0.02))
    )
    assert any(str(path) in w and "wait" in w for w in discovery.warnings)
    sink = RecordingSink()
    with caplog.at_level(logging.INFO):
        task = asyncio.create_task(discovery.run(sink))
        try:
            await asyncio.sleep(0.2)
            assert not sink.synced.is_set()
            assert sink.sets == []
            assert f"waiting for {path}" in caplog.text
            assert "last good" not in caplog.text
            write(path, "endpoints:\n- {name: a, address: 10.0.0.1, port: 8000}\n")
            await asyncio.wait_for(sink.synced.wait(), 2)
            assert sink.sets == [["a"]]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
