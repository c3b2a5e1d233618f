"""A real stack for tests: mock pods, the service and a client, all on loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from datalayer.client import DataLayerClient
from datalayer.config import ConfigError, load_config_text
from datalayer.registry import default_registry
from mockpod.server import PodGroup, start_pods
from mockpod.spec import PodSpec
from server.app import DataLayerApp, ServeOptions

STACK_CONFIG = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
- type: core-metrics-extractor
- type: file-discovery
  parameters: {{path: {endpoints}, pollInterval: 50ms}}
dataLayer:
  interval: 50ms
  timeout: 300ms
  stalenessThreshold: 500ms
  sources:
  - pluginRef: metrics-data-source
    extractors: [{{pluginRef: core-metrics-extractor}}]
  discovery: {{pluginRef: file-discovery}}
"""

DEFAULT_PODS = (
    PodSpec(name="pod-a"),
    PodSpec(name="pod-b", loras=("sql-lora", "chat-lora"), max_lora=2),
    PodSpec(name="pod-c", model="Qwen/Qwen2.5-7B-Instruct", engines=2),
)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS's pick; it may be taken again later)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll `check` until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def write_endpoints_file(path: Path, pods: PodGroup, names: list[str] | None = None) -> None:
    """Atomically (re)write a file-discovery file listing `pods` (or those named)."""
    entries = [
        {
            "name": pod.spec.name,
            "address": "127.0.0.1",
            "port": pod.port,
            "labels": {
                "app": "vllm",
                "pod": pod.spec.name,
                "llm-d.ai/engine-type": pod.spec.engine_type,
            },
        }
        for pod in pods.pods
        if names is None or pod.spec.name in names
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"endpoints": entries}))
    tmp.replace(path)


@dataclass
class Stack:
    pods: PodGroup
    app: DataLayerApp
    client: DataLayerClient
    endpoints_file: Path
    http: aiohttp.ClientSession

    def write_endpoints(self, names: list[str] | None = None) -> None:
        write_endpoints_file(self.endpoints_file, self.pods, names)

    async def control(self, index: int, body: dict[str, Any]) -> None:
        async with self.http.post(f"{self.pods[index].url}/control", json=body) as response:
            assert response.status == 200, await response.text()


@contextlib.asynccontextmanager
async def running_stack(
    tmp_path: Path,
    config: str = STACK_CONFIG,
    pod_specs: Sequence[PodSpec] = DEFAULT_PODS,
    **serve_options: Any,
) -> AsyncIterator[Stack]:
    """Pods, the service on them (file discovery from `{endpoints}` in `config`) and a client."""
    pods = await start_pods(pod_specs)
    endpoints_file = tmp_path / "endpoints.yaml"
    http = aiohttp.ClientSession()
    config = load_config_text(
        config.format(endpoints=endpoints_file), default_registry(), file="stack.yaml"
    )
    options = ServeOptions(grpc_host="127.0.0.1", grpc_port=0, metrics_port=0, **serve_options)
    app = DataLayerApp(config, options)
    write_endpoints_file(endpoints_file, pods)
    await app.start()
    stack = Stack(pods, app, DataLayerClient(f"127.0.0.1:{app.grpc_port}"), endpoints_file, http)
    try:
        yield stack
    finally:
        await stack.client.close()
        await app.stop()
        await http.close()
        await pods.close()


#: A json-extractor plugin entry, for configs whose source produces JSON documents.
JSON_EXTRACTOR = "- type: json-extractor\n  parameters: {fields: [{path: a}]}"


def one_source_config_error(
    source: str, parameters: str, extractor: str = "- type: core-metrics-extractor"
) -> ConfigError:
    """Load a config whose only source is `source` (its `parameters` as YAML flow text) under
    the one extractor plugin entry `extractor`; return the ConfigError it must raise."""
    extractor_type = extractor.split("type:", 1)[1].split()[0]
    text = (
        f"plugins:\n- type: {source}\n  parameters: {parameters}\n{extractor}\n"
        "- type: file-discovery\n  parameters: {path: e}\n"
        f"dataLayer:\n  sources:\n  - pluginRef: {source}\n"
        f"    extractors: [{{pluginRef: {extractor_type}}}]\n"
        "  discovery: {pluginRef: file-discovery}\n"
    )
    try:
        load_config_text(text, default_registry(), file="c.yaml")
    except ConfigError as exc:
        return exc
    raise AssertionError(f"no ConfigError for {source} parameters {parameters}")
