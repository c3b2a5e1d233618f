"""What the Go and Python scheduler tests share: the service config (exporting `running` into
metrics.custom for the metric scorer), pod loads, the pick line format, and `told`, which sets
pods' loads and waits until the service shows them."""

from __future__ import annotations

import re

from stack import Stack, eventually

CONFIG = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
- type: core-metrics-extractor
  parameters:
    engineConfigs:
    - name: vllm
      customMetrics:
      - {{attributeKey: running, metricSpec: "vllm:num_requests_running"}}
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

PICK = re.compile(r"^pick (\d+): (\S+) score=([\d.]+) \((.*)\)$")
IDLE = {"waiting": 0, "running": 0, "kv_cache_usage": 0.0}
BUSY = {"waiting": 8, "running": 4, "kv_cache_usage": 0.9}


async def told(
    stack: Stack, loads: dict[int, dict[str, float]], stale: tuple[int, ...] = ()
) -> None:
    """Tell pods their load, stop the `stale` ones, and wait until the service shows it all."""
    for index, load in loads.items():
        await stack.control(index, load)
    for index in stale:
        await stack.pods[index].close()
    names = {i: stack.pods[i].spec.name for i in range(3)}

    async def seen() -> bool:
        by_name = {ep.name: ep for ep in (await stack.client.list_endpoints()).endpoints}
        return all(
            by_name[names[i]].stale == (i in stale)
            and by_name[names[i]].metrics.waiting_queue_size == load.get("waiting", 0)
            and by_name[names[i]].metrics.custom.get("running") == load.get("running", 0)
            for i, load in loads.items()
        ) and all(by_name[names[i]].stale for i in stale)

    await eventually(seen, timeout=10, what=f"the service to show {loads}, stale {stale}")
