"""Issue 14 item 2: upstream's precise prefix-cache EPP files load and run.

Both shapes of upstream's `deploy/config/epp-precise-prefix-cache-config.yaml` (the same
plugin types, parameter keys and wiring; comments left out): the older one, where
`precise-prefix-cache-scorer` is an extractor of `endpoint-notification-source`, and the
current split one, `token-producer` -> `precise-prefix-cache-producer` ->
`prefix-cache-scorer`. Here the KV-block index is the data layer's own, so that extractor
becomes `kv-block-index` under a `kv-events-data-source`, and one warning line says what is
left to the scheduler.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from datalayer.config import load_config_file, load_config_text
from datalayer.registry import Registry, default_registry
from plugins.extractors.kv_block_index.extractor import KvBlockIndexExtractor
from plugins.sources.kv_events.source import KvEventsDataSource
from server.cli import main as cli_main

from stack import DEFAULT_PODS, eventually, running_stack

OLDER = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
  - type: tokenizer
    parameters:
      modelName: hf-repo/model-name
  - type: endpoint-notification-source
  - type: single-profile-handler
  - type: decode-filter
  - type: precise-prefix-cache-scorer
    parameters:
      tokenProcessorConfig:
        blockSize: 64
        hashSeed: "42"
      indexerConfig:
        tokenizersPoolConfig:
          modelName: hf-repo/model-name
        kvBlockIndexConfig:
          enableMetrics: true
  - type: kv-cache-utilization-scorer
  - type: queue-scorer
  - type: max-score-picker
dataLayer:
  sources:
    - pluginRef: endpoint-notification-source
      extractors:
        - pluginRef: precise-prefix-cache-scorer
schedulingProfiles:
  - name: default
    plugins:
      - pluginRef: decode-filter
      - pluginRef: tokenizer
      - pluginRef: precise-prefix-cache-scorer
        weight: 2.0
      - pluginRef: max-score-picker
"""

CURRENT = """\
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
  - type: token-producer
    parameters:
      backend: vllm
      modelName: hf-repo/model-name
      vllm:
        url: http://localhost:8000
  - type: endpoint-notification-source
  - type: metrics-data-source
  - type: core-metrics-extractor
  - type: single-profile-handler
  - type: decode-filter
  - type: precise-prefix-cache-producer
    parameters:
      tokenProcessorConfig:
        blockSize: 64
      indexerConfig:
        kvBlockIndexConfig:
          enableMetrics: true
  - type: prefix-cache-scorer
    parameters:
      prefixMatchInfoProducerName: precise-prefix-cache-producer
  - type: kv-cache-utilization-scorer
  - type: queue-scorer
  - type: max-score-picker
dataLayer:
  sources:
    - pluginRef: metrics-data-source
      extractors:
        - pluginRef: core-metrics-extractor
    - pluginRef: endpoint-notification-source
      extractors:
        - pluginRef: precise-prefix-cache-producer
schedulingProfiles:
  - name: default
    plugins:
      - pluginRef: decode-filter
      - pluginRef: prefix-cache-scorer
        weight: 2.0
      - pluginRef: max-score-picker
"""


@pytest.fixture(scope="module")
def registry() -> Registry:
    return default_registry()


def wiring(text: str, registry: Registry) -> list[tuple[str, str, list[str]]]:
    config = load_config_text(text, registry, file="epp.yaml")
    return [
        (b.source.type_name, b.source.name, [e.type_name for e in b.extractors])
        for b in config.sources
    ]


def test_older_scorer_config_runs_the_index_here(registry: Registry) -> None:
    config = load_config_text(OLDER, registry, file="epp.yaml")
    assert wiring(OLDER, registry) == [
        ("kv-events-data-source", "precise-prefix-cache-scorer-kv-events", ["kv-block-index"])
    ]
    index = config.plugins["precise-prefix-cache-scorer"]
    assert isinstance(index, KvBlockIndexExtractor)
    assert (index.params.block_size, index.params.hash_seed) == (64, "42")
    (line,) = [w for w in config.warnings if w.startswith("ignored")]
    assert "plugin tokenizer (tokenizer)" in line
    assert "plugin endpoint-notification-source (endpoint-notification-source)" in line
    assert (
        "precise-prefix-cache-scorer (precise-prefix-cache-scorer) runs here as kv-block-index"
        " + kv-events-data-source (blockSize=64, hashSeed=42); left: scoring, tokenization, "
        "indexerConfig.tokenizersPoolConfig.modelName, indexerConfig.kvBlockIndexConfig."
        "enableMetrics"
    ) in line
    assert "\n" not in line
    assert not any("declared but not used" in w for w in config.warnings)


def test_current_producer_config_keeps_metrics_and_runs_the_index(registry: Registry) -> None:
    config = load_config_text(CURRENT, registry, file="epp.yaml")
    assert wiring(CURRENT, registry) == [
        ("metrics-data-source", "metrics-data-source", ["core-metrics-extractor"]),
        (
            "kv-events-data-source",
            "precise-prefix-cache-producer-kv-events",
            ["kv-block-index"],
        ),
    ]
    (line,) = [w for w in config.warnings if w.startswith("ignored")]
    assert "plugin prefix-cache-scorer (prefix-cache-scorer)" in line
    assert "plugin token-producer (token-producer)" in line
    assert "left: scoring, tokenization, indexerConfig.kvBlockIndexConfig.enableMetrics" in line
    assert [w for w in config.warnings if not w.startswith("ignored")] == []


def test_kv_events_parameters_are_mapped(registry: Registry) -> None:
    text = CURRENT.replace(
        "      indexerConfig:\n",
        "      kvEventsConfig:\n        discoverPods: true\n"
        "        podDiscoveryConfig:\n          socketPort: 6123\n"
        "      indexerConfig:\n",
        1,
    )
    config = load_config_text(text, registry, file="epp.yaml")
    source = config.plugins["precise-prefix-cache-producer-kv-events"]
    assert isinstance(source, KvEventsDataSource)
    assert source.params.port == 6123
    (line,) = [w for w in config.warnings if w.startswith("ignored")]
    assert "kvEventsConfig.discoverPods" in line  # left to the scheduler: not ours


def test_a_scheduler_extractor_under_a_data_layer_source_is_dropped(registry: Registry) -> None:
    text = CURRENT.replace(
        "        - pluginRef: core-metrics-extractor\n",
        "        - pluginRef: core-metrics-extractor\n        - pluginRef: queue-scorer\n",
    )
    config = load_config_text(text, registry, file="epp.yaml")
    assert [e.name for e in config.sources[0].extractors] == ["core-metrics-extractor"]
    (line,) = [w for w in config.warnings if w.startswith("ignored")]
    assert "queue-scorer (queue-scorer) wired under metrics-data-source" in line


@pytest.mark.parametrize("text", [OLDER, CURRENT], ids=["older", "current"])
def test_validate_cli_accepts_both(text: str, tmp_path: Path) -> None:
    path = tmp_path / "epp.yaml"
    path.write_text(text)
    assert cli_main(["validate", str(path)]) == 0
    assert load_config_file(path, default_registry()).kind == "EndpointPickerConfig"


async def test_current_config_runs_against_mock_pods(tmp_path: Path) -> None:
    endpoints = "{endpoints}"
    text = CURRENT.replace("{", "{{").replace("}", "}}")
    text = text.replace(
        "  - type: single-profile-handler\n",
        "  - type: single-profile-handler\n  - type: file-discovery\n"
        f"    parameters: {{{{path: {endpoints}, pollInterval: 50ms}}}}\n",
    ).replace("dataLayer:\n", "dataLayer:\n  discovery: {{pluginRef: file-discovery}}\n")
    async with running_stack(tmp_path, text, DEFAULT_PODS) as stack:
        await stack.control(0, {"waiting": 3})

        async def collected() -> bool:
            return (await stack.client.get_endpoint("pod-a")).metrics.waiting_queue_size == 3

        await eventually(collected, what="pod-a collected under the precise-prefix config")
        # No KV events arrive from the mock pods (idle caches): that silence is not staleness.
        await asyncio.sleep(1.2)  # past the stack's 500 ms staleness threshold
        endpoint = await stack.client.get_endpoint("pod-a")
        assert not endpoint.stale, endpoint.last_error
        kinds = [b.source.type_name for b in stack.app.config.sources]
        assert kinds == ["metrics-data-source", "kv-events-data-source"]
