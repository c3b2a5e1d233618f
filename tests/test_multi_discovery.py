"""Several discoveries feeding one store: each removes only what it reported itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from datalayer.config import ConfigError, load_config_text
from datalayer.registry import default_registry

from stack import eventually, running_stack

CONFIG = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
- type: core-metrics-extractor
- type: file-discovery
  name: main
  parameters: {{path: {endpoints}, pollInterval: 50ms}}
- type: file-discovery
  name: extra
  parameters: {{path: EXTRA, pollInterval: 50ms}}
dataLayer:
  sources:
  - pluginRef: metrics-data-source
    extractors: [{{pluginRef: core-metrics-extractor}}]
  discovery: [{{pluginRef: main}}, {{pluginRef: extra}}]
"""


async def test_each_discovery_removes_only_its_own(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    async with running_stack(tmp_path, CONFIG.replace("EXTRA", str(extra))) as stack:

        async def names() -> list[str]:
            return sorted(e.name for e in (await stack.client.list_endpoints()).endpoints)

        await eventually(lambda: _eq(names(), ["pod-a", "pod-b", "pod-c"]), what="main's three")
        pod_a = stack.pods[0]
        extra.write_text(
            yaml.safe_dump(
                {
                    "endpoints": [
                        {"name": "pod-a", "address": "127.0.0.1", "port": pod_a.port},
                        {"name": "pod-x", "address": "127.0.0.1", "port": pod_a.port},
                    ]
                }
            )
        )
        await eventually(lambda: _eq(names(), ["pod-a", "pod-b", "pod-c", "pod-x"]), what="+x")
        stack.write_endpoints(["pod-b", "pod-c"])  # main drops pod-a; extra still reports it
        await asyncio.sleep(0.3)
        assert await names() == ["pod-a", "pod-b", "pod-c", "pod-x"]
        extra.write_text("endpoints: []\n")
        await eventually(lambda: _eq(names(), ["pod-b", "pod-c"]), what="extra's own removed")


async def _eq(value: object, expected: object) -> bool:
    return await value == expected  # type: ignore[misc]


def test_a_discovery_listed_twice_is_an_error() -> None:
    text = (
        CONFIG.format(endpoints="main.yaml")
        .replace("EXTRA", "extra.yaml")
        .replace("{pluginRef: extra}]", "{pluginRef: main}]")
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(text, default_registry(), file="c.yaml")
    assert info.value.path == "dataLayer.discovery[1].pluginRef"
    assert "listed twice" in info.value.message
