"""Upstream EndpointPickerConfig files: the real ones in ../shared/epp-configs, and ones written
from the data-layer docs (hose + filter, the older `data:` key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from datalayer.config import ConfigError, load_config_file, load_config_text
from datalayer.registry import Registry, default_registry
from server.cli import _attach_endpoints_file

from stack import DEFAULT_PODS, eventually, running_stack

SHARED = Path(__file__).resolve().parents[2] / "shared" / "epp-configs"
REAL_CONFIGS = sorted(SHARED.glob("*.yaml"))


@pytest.fixture(scope="module")
def registry() -> Registry:
    return default_registry()


def test_the_real_configs_are_there() -> None:
    assert [p.name for p in REAL_CONFIGS] == ["dp-epp-config.yaml", "epp-config.yaml"]


@pytest.mark.parametrize("path", REAL_CONFIGS, ids=lambda p: p.name)
def test_real_epp_configs_load_with_injected_defaults(path: Path, registry: Registry) -> None:
    config = load_config_file(path, registry)
    assert config.kind == "EndpointPickerConfig"
    (binding,) = config.sources
    assert binding.source.type_name == "metrics-data-source"
    assert [e.type_name for e in binding.extractors] == ["core-metrics-extractor"]
    assert config.discovery is None
    ignored = next(w for w in config.warnings if w.startswith("ignored"))
    assert "plugin prefix-cache-scorer (prefix-cache-scorer)" in ignored
    assert "plugin max-score-picker (max-score-picker)" in ignored
    assert "section schedulingProfiles" in ignored
    assert any(
        "injected metrics-data-source with core-metrics-extractor" in w for w in config.warnings
    )


DOCS_STYLE = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: prometheus-data-source
  name: hose
  parameters: {scheme: http, path: /metrics}
- type: prometheus-metric
  name: filter
  parameters: {metricName: "vllm:num_requests_running"}
- type: metric-scorer
  parameters: {metricName: "vllm:num_requests_running"}
- type: file-discovery
  parameters: {path: endpoints.yaml}
schedulingProfiles:
- name: default
  plugins: [{pluginRef: queue-scorer}, {pluginRef: metric-scorer}]
SECTION:
  sources:
  - pluginRef: hose
    extractors: [{pluginRef: filter}]
  discovery: {pluginRef: file-discovery}
"""


@pytest.mark.parametrize("section", ["dataLayer", "data"])
def test_docs_style_epp_config_uses_its_data_layer(section: str, registry: Registry) -> None:
    config = load_config_text(DOCS_STYLE.replace("SECTION", section), registry, file="epp.yaml")
    (binding,) = config.sources
    assert (binding.source.name, [e.name for e in binding.extractors]) == ("hose", ["filter"])
    assert config.discovery is not None
    assert config.warnings == [
        "ignored (scheduling, not data layer): section schedulingProfiles, "
        "plugin queue-scorer (queue-scorer), plugin metric-scorer (metric-scorer)"
    ]


def test_both_section_names_is_an_error(registry: Registry) -> None:
    text = DOCS_STYLE.replace("SECTION", "dataLayer") + "data: {}\n"
    with pytest.raises(ConfigError, match="use either `dataLayer` or its older name `data`"):
        load_config_text(text, registry, file="epp.yaml")


def test_errors_in_epp_configs_keep_the_original_plugin_index(registry: Registry) -> None:
    text = DOCS_STYLE.replace("SECTION", "dataLayer").replace("path: /metrics", "path: metrics")
    with pytest.raises(ConfigError) as info:
        load_config_text(text, registry, file="epp.yaml")
    assert info.value.path == "plugins[1].parameters.path"
    assert info.value.line == 7


def test_inject_defaults_false_means_no_sources(registry: Registry) -> None:
    text = (SHARED / "epp-config.yaml").read_text() + "injectDefaults: false\n"
    with pytest.raises(ConfigError, match=r"dataLayer\.sources: at least one source is required"):
        load_config_text(text, registry, file="epp.yaml")


def test_unknown_epp_api_version(registry: Registry) -> None:
    text = (SHARED / "epp-config.yaml").read_text().replace("llm-d.ai/v1alpha1", "v9")
    with pytest.raises(ConfigError) as info:
        load_config_text(text, registry, file="epp.yaml")
    assert info.value.path == "apiVersion"
    assert "llm-d.ai/v1alpha1 or inference.networking.x-k8s.io/v1alpha1" in info.value.message


def test_serve_needs_endpoints_for_an_epp_config_without_discovery(registry: Registry) -> None:
    config = load_config_file(REAL_CONFIGS[0], registry)
    assert "add one, or pass --endpoints-file" in (
        _attach_endpoints_file(config, None, registry) or ""
    )
    assert _attach_endpoints_file(config, "e.yaml", registry) is None
    assert config.discovery is not None
    assert config.discovery.type_name == "file-discovery"


async def test_real_epp_config_end_to_end(tmp_path: Path, registry: Registry) -> None:
    """The upstream file, as is, collecting from mock pods through --endpoints-file."""
    text = (SHARED / "epp-config.yaml").read_text()
    # running_stack formats `{endpoints}` into the text; the EPP file has no braces to escape.
    endpoints = "{endpoints}"
    text += "dataLayer:\n  discovery: {{pluginRef: file-discovery}}\n"
    text = text.replace(
        "- type: single-profile-handler",
        "- type: single-profile-handler\n"
        f"- type: file-discovery\n  parameters: {{{{path: {endpoints}, pollInterval: 50ms}}}}",
    )
    async with running_stack(tmp_path, text, DEFAULT_PODS) as stack:
        await stack.control(0, {"waiting": 4})

        async def collected() -> bool:
            return (await stack.client.get_endpoint("pod-a")).metrics.waiting_queue_size == 4

        await eventually(collected, what="pod-a collected under the EPP config")
        assert stack.app.config.kind == "EndpointPickerConfig"
