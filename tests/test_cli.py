"""The `datalayer` command as a user runs it: real processes, real ports, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from datalayer.client import DataLayerClient
from datalayer.registry import default_registry

from stack import eventually

DATALAYER = str(Path(sys.executable).with_name("datalayer"))

CONFIG = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
- type: core-metrics-extractor
- type: file-discovery
  parameters: {{path: {endpoints}}}
dataLayer:
  sources:
  - pluginRef: metrics-data-source
    extractors: [{{pluginRef: core-metrics-extractor}}]
  discovery: {{pluginRef: file-discovery}}
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DATALAYER, *args], capture_output=True, text=True, timeout=60)


def test_validate_ok_and_error_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(CONFIG.format(endpoints=tmp_path / "e.yaml"))
    result = run("validate", str(good))
    assert result.returncode == 0, result.stderr
    assert f"{good}: OK (3 plugins, 1 sources, discovery 'file-discovery')" in result.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("- type: metrics-data-source", "- type: metrics"))
    result = run("validate", str(bad))
    assert result.returncode == 2
    assert f"{bad}:3: plugins[0].type: unknown plugin type 'metrics'" in result.stderr


def test_plugins_lists_types_from_their_declarations() -> None:
    result = run("plugins")
    assert result.returncode == 0, result.stderr
    assert "metrics-data-source  [source]  produces MetricSamples" in result.stdout
    assert "core-metrics-extractor  [extractor]  takes MetricSamples" in result.stdout
    assert "file-discovery  [discovery]" in result.stdout
    assert "    maxBodyBytes: int = 16777216" in result.stdout
    # The listing is rendered from each type's JSON Schema: bounds and nested models show.
    assert "    port: int | null = None  (1..65535)" in result.stdout
    assert "    EngineConfig:\n        name: str = required\n" in result.stdout


def test_plugins_json_gives_every_registered_type_a_schema() -> None:
    result = run("plugins", "--json")
    assert result.returncode == 0, result.stderr
    catalogue = json.loads(result.stdout)
    assert sorted(catalogue) == default_registry().names()
    for entry in catalogue.values():
        assert entry["kind"] in ("source", "extractor", "discovery")
        schema = entry["parametersSchema"]
        definition = schema["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
        assert definition["type"] == "object"
        assert definition["additionalProperties"] is False  # unknown keys are refused
    metrics = catalogue["metrics-data-source"]
    assert metrics["outputType"] == "MetricSamples"
    port = metrics["parametersSchema"]["$defs"]["MetricsSourceParameters"]["properties"]["port"]
    assert {"type": "integer", "minimum": 1, "maximum": 65535} in port["anyOf"]
    assert catalogue["core-metrics-extractor"]["inputType"] == "MetricSamples"


def test_plugins_into_a_reader_that_left_is_not_an_error() -> None:
    # `datalayer plugins | head`: the read end is closed before the command writes a byte.
    process = subprocess.Popen(
        [DATALAYER, "plugins"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stderr is not None
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 0, stderr
    assert "BrokenPipeError" not in stderr
    assert stderr == ""


async def _read_until(stream: asyncio.StreamReader, pattern: str, timeout: float = 20) -> str:
    """Read lines until one matches; return the first group."""
    seen: list[str] = []

    async def scan() -> str:
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError("process ended; it printed:\n" + "".join(seen))
            seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match.group(1)

    return await asyncio.wait_for(scan(), timeout)


@pytest.fixture
async def mock_pod_process() -> AsyncIterator[int]:
    process = await asyncio.create_subprocess_exec(
        DATALAYER, "mock-pod", "--port", "0", "--name", "cli-pod", stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        yield int(await _read_until(process.stdout, r"on http://127\.0\.0\.1:(\d+)"))
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 10)


async def test_serve_collects_and_stops_cleanly_on_sigterm(
    tmp_path: Path, mock_pod_process: int
) -> None:
    endpoints = tmp_path / "endpoints.yaml"
    endpoints.write_text(
        f"endpoints:\n- {{name: cli-pod, address: 127.0.0.1, port: {mock_pod_process}}}\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(endpoints=endpoints))
    process = await asyncio.create_subprocess_exec(
        DATALAYER,
        "serve",
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
        "--log-format",
        "json",
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    try:
        port = await _read_until(process.stderr, r'"grpc_port": (\d+)')
        async with DataLayerClient(f"127.0.0.1:{port}") as client:

            async def fresh() -> bool:
                listing = await client.list_endpoints()
                return len(listing.endpoints) == 1 and not listing.endpoints[0].stale

            await eventually(fresh, timeout=10, what="the pod to be collected")
            endpoint = await client.get_endpoint("cli-pod")
            assert endpoint.port == mock_pod_process
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
        rest = (await process.stderr.read()).decode()
        assert '"msg": "stopped"' in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_demo_streams_updates_for_three_pods() -> None:
    result = run("demo", "--duration", "4")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    added = [line for line in lines if " ADDED " in line]
    assert sorted(line.split()[3] for line in added) == ["vllm-0", "vllm-1", "vllm-2"]
    assert any(line.startswith("--- synced at revision") for line in lines)
    updates = [line for line in lines if " UPDATED " in line and " fresh" in line]
    assert len(updates) >= 3, result.stdout


@pytest.mark.parametrize("which", ["grpc", "metrics"])
def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path: Path, which: str) -> None:
    """A taken port is an operator mistake, not a crash: one line naming it, exit 2, no
    traceback (gRPC used to raise from add_port, aiohttp an OSError from the site)."""
    import socket

    endpoints = tmp_path / "endpoints.yaml"
    endpoints.write_text("endpoints: []\n")
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(endpoints=endpoints))
    with socket.socket() as taken, socket.socket() as spare:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        spare.bind(("127.0.0.1", 0))
        busy, free = taken.getsockname()[1], spare.getsockname()[1]
        spare.close()
        grpc_port, metrics_port = (busy, free) if which == "grpc" else (free, busy)
        result = run(
            "serve", "--config", str(config), "--host", "127.0.0.1",
            "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    label = "gRPC" if which == "grpc" else "metrics"
    assert f"{label} port 127.0.0.1:{busy}" in errors[0]
    assert "in use" in errors[0]


RELATIVE_CONFIG = CONFIG.replace("{{path: {endpoints}}}", "{{path: endpoints.yaml{watch}}}")


def test_validate_names_a_missing_discovery_file(tmp_path: Path) -> None:
    """It used to say OK; serve then reported SERVING with 0 endpoints."""
    config = tmp_path / "config.yaml"
    config.write_text(RELATIVE_CONFIG.format(watch=", watchFile: false"))
    result = subprocess.run(
        [DATALAYER, "validate", str(config)], capture_output=True, text=True, cwd="/"
    )
    assert result.returncode == 2, result.stdout
    assert "plugins[2].parameters.path" in result.stderr
    assert f"{tmp_path / 'endpoints.yaml'}: no such file" in result.stderr

    config.write_text(RELATIVE_CONFIG.format(watch=""))  # watchFile: true, the default
    result = subprocess.run(
        [DATALAYER, "validate", str(config)], capture_output=True, text=True, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path / 'endpoints.yaml'} does not exist yet" in result.stderr


async def test_serve_waits_for_a_missing_watched_file_then_serves(tmp_path: Path) -> None:
    """Relative to the config's folder (the process runs in /), not SERVING until the file
    exists, and no talk of a 'last good endpoint set' that never was."""
    config = tmp_path / "config.yaml"
    config.write_text(
        RELATIVE_CONFIG.format(watch=", pollInterval: 50ms").replace(
            "dataLayer:\n", "dataLayer:\n  interval: 100ms\n"
        )
    )
    process = await asyncio.create_subprocess_exec(
        DATALAYER, "serve", "--config", str(config), "--host", "127.0.0.1",
        "--grpc-port", "0", "--metrics-port", "-1",
        stderr=subprocess.PIPE, cwd="/", env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stderr is not None
    try:
        waiting = await _read_until(process.stderr, r"(waiting for \S+)")
        assert waiting == f"waiting for {tmp_path / 'endpoints.yaml'}"
        await asyncio.sleep(0.3)
        (tmp_path / "endpoints.yaml").write_text(
            "endpoints:\n- {name: later, address: 127.0.0.1, port: 9}\n"
        )
        count = await _read_until(process.stderr, r"discovery synced: (\d+) endpoints")
        assert count == "1"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
        rest = (await process.stderr.read()).decode()
        assert "last good" not in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
