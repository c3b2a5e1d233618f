"""The config loader: EPP-shaped YAML, strict, every error naming file, line, path and problem."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from datalayer.config import ConfigError, load_config_file, load_config_text
from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import Parameters
from datalayer.plugin import Extractor
from datalayer.registry import Registry, default_registry

GOOD = """\
apiVersion: datalayer.llm-d.ai/v1alpha1
kind: DataLayerConfig
plugins:
- type: metrics-data-source
  parameters:
    scheme: http
    path: /metrics
- type: core-metrics-extractor
- type: file-discovery
  name: pods
  parameters:
    path: endpoints.yaml
dataLayer:
  interval: 100ms
  stalenessThreshold: 3s
  sources:
  - pluginRef: metrics-data-source
    timeout: 500ms
    extractors:
    - pluginRef: core-metrics-extractor
  discovery:
    pluginRef: pods
"""


class _NoParams(Parameters):
    pass


class JsonDocument:
    """A payload type no Prometheus source produces."""


class DictExtractor(Extractor):
    """A test-only extractor that takes JSON documents, to check wiring types."""

    type_name = "dict-extractor"
    Parameters = _NoParams
    input_type = JsonDocument

    def extract(self, payload: Any, endpoint: EndpointSpec, out: EndpointUpdate) -> None:
        pass


@pytest.fixture(scope="module")
def registry() -> Registry:
    registry = default_registry()
    registry.register(DictExtractor)
    return registry


def load(text: str, registry: Registry) -> Any:
    return load_config_text(text, registry, file="test.yaml")


def test_good_config_is_wired(registry: Registry) -> None:
    config = load(GOOD, registry)
    assert set(config.plugins) == {"metrics-data-source", "core-metrics-extractor", "pods"}
    (binding,) = config.sources
    assert binding.source.name == "metrics-data-source"
    assert [e.name for e in binding.extractors] == ["core-metrics-extractor"]
    assert (binding.interval, binding.timeout) == (0.1, 0.5)
    assert config.collector.staleness_threshold == 3.0
    assert config.discovery.name == "pods"
    assert config.warnings == []


def test_defaults_follow_upstream(registry: Registry) -> None:
    text = GOOD.replace("  interval: 100ms\n", "").replace("    timeout: 500ms\n", "")
    text = text.replace("  stalenessThreshold: 3s\n", "")
    config = load(text, registry)
    assert (config.sources[0].interval, config.sources[0].timeout) == (0.05, 1.0)
    assert config.collector.staleness_threshold == 2.0


def test_header_is_optional_and_unused_plugins_warn(registry: Registry) -> None:
    text = GOOD.split("plugins:", 1)[1]
    text = "plugins:" + text.replace(
        "- type: core-metrics-extractor\n",
        "- type: core-metrics-extractor\n- type: core-metrics-extractor\n  name: spare\n",
    )
    config = load(text, registry)
    assert config.warnings == [
        "plugin 'spare' (core-metrics-extractor) is declared but not used by dataLayer"
    ]


def expect_error(text: str, registry: Registry, path: str, fragment: str, line: int | None) -> None:
    with pytest.raises(ConfigError) as info:
        load(text, registry)
    error = info.value
    assert error.file == "test.yaml"
    assert error.path == path
    assert fragment in error.message
    assert error.line == line
    assert str(error).startswith(f"test.yaml:{line}: {path}: " if line else "test.yaml: ")


@pytest.mark.parametrize(
    ("old", "new", "path", "fragment", "line"),
    [
        ("kind: DataLayerConfig", "kind: Other", "kind", "expected 'DataLayerConfig'", 2),
        ("kind: DataLayerConfig", "kind: x\ncolour: red", "colour", "unknown field", 3),
        (
            "- type: core-metrics-extractor",
            "- type: core-metrix",
            "plugins[1].type",
            "unknown plugin type 'core-metrix'",
            8,
        ),
        (
            "  name: pods\n",
            "  name: metrics-data-source\n",
            "plugins[2].name",
            "duplicate plugin name",
            10,
        ),
        (
            "    scheme: http",
            "    schema: http",
            "plugins[0].parameters.schema",
            "unknown field (known fields:",
            6,
        ),
        (
            "    scheme: http",
            "    scheme: ftp",
            "plugins[0].parameters.scheme",
            "expected one of 'http' | 'https', got 'ftp'",
            6,
        ),
        (
            "    path: /metrics",
            "    path: metrics",
            "plugins[0].parameters.path",
            "must start with '/'",
            7,
        ),
        (
            "  interval: 100ms",
            "  interval: soon",
            "dataLayer.interval",
            "'soon' is not a duration",
            14,
        ),
        (
            "  interval: 100ms",
            "  interval: 0s",
            "dataLayer.interval",
            "must be greater than zero",
            14,
        ),
        (
            "  - pluginRef: metrics-data-source",
            "  - pluginRef: metrics",
            "dataLayer.sources[0].pluginRef",
            "no plugin named 'metrics' in `plugins`",
            17,
        ),
        (
            "    pluginRef: pods",
            "    pluginRef: core-metrics-extractor",
            "dataLayer.discovery.pluginRef",
            "is an extractor, not a discovery",
            22,
        ),
        (
            "    - pluginRef: core-metrics-extractor",
            "    - pluginRef: pods",
            "dataLayer.sources[0].extractors[0].pluginRef",
            "(file-discovery) is a discovery, not an extractor",
            20,
        ),
        (
            "    timeout: 500ms\n",
            "    timeout: 500ms\n    retries: 3\n",
            "dataLayer.sources[0].retries",
            "unknown field",
            19,
        ),
        (
            "  discovery:\n    pluginRef: pods\n",
            "",
            "dataLayer.discovery",
            "required field is missing",
            13,  # the deepest node that exists: `dataLayer:`
        ),
        (
            "    path: /metrics",
            "    path: /metrics\n    port: 70000",
            "plugins[0].parameters.port",
            "must be 1..65535, got 70000",
            8,
        ),
        (
            "    path: /metrics",
            "    path: /metrics\n    maxBodyBytes: '1MB'",
            "plugins[0].parameters.maxBodyBytes",
            "expected an integer, got str '1MB'",
            8,
        ),
        (
            "  stalenessThreshold: 3s",
            "  stalenesThreshold: 3s",
            "dataLayer.stalenesThreshold",
            "unknown field (known fields: discovery, interval, sources, stalenessThreshold, "
            "timeout)",
            15,
        ),
        (
            "    - pluginRef: core-metrics-extractor",
            "    - {pluginRef: core-metrics-extractor, name: x}",
            "dataLayer.sources[0].extractors[0].name",
            "unknown field (known fields: pluginRef)",
            20,
        ),
        (
            "    path: endpoints.yaml",
            "    path: endpoints.yaml\n    pollInterval: 0s",
            "plugins[2].parameters.pollInterval",
            "must be greater than zero",
            13,
        ),
    ],
)
def test_each_error_names_file_line_path_and_problem(
    registry: Registry, old: str, new: str, path: str, fragment: str, line: int | None
) -> None:
    assert old in GOOD
    expect_error(GOOD.replace(old, new), registry, path, fragment, line)


def test_the_document_is_parsed_once(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    # One pass builds the nodes (line marks for errors) and the data from them.
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the YAML text was parsed a second time")

    monkeypatch.setattr(yaml, "compose", refuse)
    monkeypatch.setattr(yaml, "safe_load", refuse)
    monkeypatch.setattr(yaml, "load", refuse)
    assert load(GOOD, registry).discovery.name == "pods"
    expect_error(GOOD.replace("kind: DataLayerConfig", "kind: x\ncolour: red"), registry,
                 "colour", "unknown field", 3)  # fmt: skip


def test_a_plugin_without_a_parameters_model_is_refused_at_registration() -> None:
    @dataclass
    class Old:
        key: str = "load"

    class OldExtractor(DictExtractor):
        type_name = "old-extractor"
        Parameters = Old  # type: ignore[assignment]

    with pytest.raises(TypeError, match=r"Parameters must subclass datalayer.parameters"):
        Registry().register(OldExtractor)


def test_source_extractor_type_mismatch(registry: Registry) -> None:
    text = GOOD.replace(
        "- type: core-metrics-extractor\n",
        "- type: core-metrics-extractor\n- type: dict-extractor\n",
    ).replace("    - pluginRef: core-metrics-extractor\n", "    - pluginRef: dict-extractor\n")
    expect_error(
        text,
        registry,
        "dataLayer.sources[0].extractors[0].pluginRef",
        "extractor 'dict-extractor' (dict-extractor) takes JsonDocument but source "
        "'metrics-data-source' (metrics-data-source) produces MetricSamples",
        21,
    )


def test_source_without_extractors_and_no_sources(registry: Registry) -> None:
    no_extractors = GOOD.replace("    extractors:\n    - pluginRef: core-metrics-extractor\n", "")
    expect_error(
        no_extractors, registry, "dataLayer.sources[0].extractors", "at least one extractor", 17
    )
    start = GOOD.index("  sources:")
    end = GOOD.index("  discovery:")
    no_sources = GOOD[:start] + "  sources: []\n" + GOOD[end:]
    expect_error(no_sources, registry, "dataLayer.sources", "at least one source", 16)


def test_source_listed_twice(registry: Registry) -> None:
    block = GOOD[GOOD.index("  - pluginRef: metrics") : GOOD.index("  discovery:")]
    text = GOOD.replace(block, block + block)
    expect_error(text, registry, "dataLayer.sources[1].pluginRef", "listed twice", 21)


def test_invalid_yaml_gives_the_line(registry: Registry) -> None:
    with pytest.raises(ConfigError, match=r"^test.yaml:4: invalid YAML: expected the node content"):
        load("plugins:\n- type: x\n  parameters: [\n", registry)


def test_document_must_be_a_mapping(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        load("- just\n- a list\n", registry)


def test_missing_file_names_it(registry: Registry, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=rf"^{missing}: cannot read: No such file"):
        load_config_file(missing, registry)


RELATIVE_PATHS = """\
plugins:
- type: metrics-data-source
  parameters: {scheme: https, caFile: certs/ca.pem, certFile: ABS, keyFile: k.pem}
- type: core-metrics-extractor
- type: file-data-source
  parameters: {pathTemplate: "status/{name}.json"}
- type: json-extractor
  parameters: {fields: [{path: a}]}
- type: file-discovery
  parameters: {path: endpoints.yaml}
dataLayer:
  sources:
  - pluginRef: metrics-data-source
    extractors: [{pluginRef: core-metrics-extractor}]
  - pluginRef: file-data-source
    extractors: [{pluginRef: json-extractor}]
  discovery: {pluginRef: file-discovery}
"""


def test_relative_file_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`path: endpoints.yaml` next to the config means that file, whatever the working
    directory of the process (it used to be resolved against the cwd)."""
    folder = tmp_path / "conf"
    (folder / "certs").mkdir(parents=True)
    for name in ("certs/ca.pem", "k.pem"):
        (folder / name).write_text("pem")
    absolute = tmp_path / "c.pem"
    absolute.write_text("pem")
    (folder / "config.yaml").write_text(RELATIVE_PATHS.replace("ABS", str(absolute)))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config_file("../conf/config.yaml", default_registry())
    base = folder.resolve()
    discovery = config.plugins["file-discovery"]
    assert Path(discovery.params.path) == base / "endpoints.yaml"
    metrics = config.plugins["metrics-data-source"].params
    assert Path(metrics.ca_file) == base / "certs/ca.pem"
    assert metrics.cert_file == str(absolute)
    assert Path(metrics.key_file) == base / "k.pem"
    template = config.plugins["file-data-source"].params.path_template
    assert template == str(base / "status/{name}.json")


def test_config_text_without_a_file_keeps_paths_as_written() -> None:
    """Text has no folder: paths stay as written (relative to the working directory)."""
    text = RELATIVE_PATHS.replace(
        "{scheme: https, caFile: certs/ca.pem, certFile: ABS, keyFile: k.pem}", "{}"
    )
    config = load_config_text(text, default_registry(), file="t")
    assert config.plugins["file-discovery"].params.path == "endpoints.yaml"
