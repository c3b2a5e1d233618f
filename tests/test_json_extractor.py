"""`json-extractor` and the `JsonDocument` payload: paths, numbers, errors, and wiring checks."""

from __future__ import annotations

from typing import Any

import pytest

from datalayer.config import ConfigError, load_config_text
from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import decode
from datalayer.registry import default_registry
from plugins.extractors.json import JsonExtractor, JsonExtractorParameters
from plugins.shared.payloads import JsonDocument, PayloadError
from plugins.shared.prometheus import MetricSamples

POD = EndpointSpec("pod-a", "10.0.0.1", 8000)

DOC = {
    "queue": {"waiting": 3, "running": 2.5},
    "engines": [{"kv": 0.25}, {"kv": 0.75}],
    "ready": True,
    "draining": False,
    "model": "m",
    "nothing": None,
    "0": {"x": 7},
    "huge": 10**400,
}


def extractor(*fields: dict[str, Any]) -> JsonExtractor:
    params = decode(JsonExtractorParameters, {"fields": list(fields)})
    return JsonExtractor("json-extractor", params)


def run(ex: JsonExtractor, document: Any = DOC) -> EndpointUpdate:
    out = EndpointUpdate()
    ex.extract(JsonDocument(document), POD, out)
    return out


def test_paths_read_nested_objects_arrays_and_booleans() -> None:
    out = run(
        extractor(
            {"path": "queue.waiting", "key": "waiting"},
            {"path": "queue.running"},
            {"path": "engines.1.kv", "key": "kv1"},
            {"path": "ready"},
            {"path": "draining"},
            {"path": "0.x", "key": "digit_key"},
        )
    )
    assert out.errors == []
    assert out.custom == {
        "waiting": 3.0,
        "queue.running": 2.5,
        "kv1": 0.75,
        "ready": 1.0,
        "draining": 0.0,
        "digit_key": 7.0,
    }
    assert all(type(v) is float for v in out.custom.values())


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("queue.missing", "no key 'missing' at 'queue'"),
        ("engines.5.kv", "index 5 out of range (length 2) at 'engines'"),
        ("nothing", "null"),
        ("nothing.deeper", "null at 'nothing'"),
    ],
)
def test_absent_values_are_errors_unless_optional(path: str, fragment: str) -> None:
    out = run(extractor({"path": path, "key": "k"}))
    assert out.custom == {}
    (error,) = out.errors
    assert error.startswith(f"custom[k]: {path}: ")
    assert fragment in error
    assert run(extractor({"path": path, "key": "k", "optional": True})).errors == []


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("model", "a string, not a number"),
        ("queue", "an object, not a number"),
        ("engines", "an array, not a number"),
        ("model.x", "a string, not an object or array at 'model'"),
        ("engines.first", "'first' is not an index into the array at 'engines'"),
        ("huge", "is not a finite number"),
    ],
)
def test_wrong_kinds_are_errors_even_when_optional(path: str, fragment: str) -> None:
    out = run(extractor({"path": path, "key": "k", "optional": True}))
    assert out.custom == {}
    (error,) = out.errors
    assert fragment in error


def test_one_bad_field_does_not_hide_the_others() -> None:
    out = run(extractor({"path": "queue.waiting"}, {"path": "model"}, {"path": "ready"}))
    assert out.custom == {"queue.waiting": 3.0, "ready": 1.0}
    assert len(out.errors) == 1


def test_a_document_that_is_not_an_object_is_an_error_per_field() -> None:
    out = run(extractor({"path": "a"}), document=[1, 2])
    assert out.errors == ["custom[a]: a: 'a' is not an index into the array"]
    assert run(extractor({"path": "0"}), document=[4, 2]).custom == {"0": 4.0}


def test_json_document_parsing_is_strict() -> None:
    assert JsonDocument.parse(b'{"a": [1, 2.5]}') == JsonDocument({"a": [1, 2.5]})
    assert JsonDocument.parse("3").value == 3
    for bad in (b"{", b"NaN", b'{"a": Infinity}', b"\xff\xfe", b""):
        with pytest.raises(PayloadError, match="not JSON"):
            JsonDocument.parse(bad)


def test_json_document_is_not_a_dict() -> None:
    """A dict-based type would pass the wiring check against MetricSamples (a dict)."""
    assert not issubclass(JsonDocument, dict)
    assert not issubclass(MetricSamples, JsonDocument)
    assert not issubclass(JsonDocument, MetricSamples)


# --- through the config loader ---

DISCOVERY = "- type: file-discovery\n  parameters: {path: e.yaml}\n"
WIRING = """\
plugins:
{source}
- type: json-extractor
  parameters:
    fields: [{{path: queue.waiting, key: waiting}}]
- type: prometheus-metric
  parameters: {{metricName: vllm:num_requests_waiting}}
{discovery}dataLayer:
  sources:
  - pluginRef: src
    extractors: [{{pluginRef: {extractor}}}]
  discovery: {{pluginRef: file-discovery}}
"""


def wiring(source: str, extractor: str) -> str:
    return WIRING.format(source=source, extractor=extractor, discovery=DISCOVERY)


@pytest.mark.parametrize(
    ("source", "extractor", "produces"),
    [
        ("- type: metrics-data-source\n  name: src", "json-extractor", "MetricSamples"),
        ("- type: prometheus-data-source\n  name: src", "json-extractor", "MetricSamples"),
        ("- type: models-data-source\n  name: src", "json-extractor", "ModelsList"),
        (
            "- type: unix-socket-data-source\n  name: src\n"
            "  parameters: {socketPath: '/run/{name}.sock'}",
            "json-extractor",
            "MetricSamples",
        ),
        (
            "- type: unix-socket-data-source\n  name: src\n"
            "  parameters: {socketPath: '/run/{name}.sock', format: json}",
            "prometheus-metric",
            "JsonDocument",
        ),
        (
            "- type: file-data-source\n  name: src\n  parameters: {pathTemplate: '/s/{name}'}",
            "prometheus-metric",
            "JsonDocument",
        ),
        (
            "- type: file-data-source\n  name: src\n"
            "  parameters: {pathTemplate: '/s/{name}', format: prometheus}",
            "json-extractor",
            "MetricSamples",
        ),
        ("- type: push-data-source\n  name: src", "prometheus-metric", "JsonDocument"),
        (
            "- type: push-data-source\n  name: src\n  parameters: {format: prometheus}",
            "json-extractor",
            "MetricSamples",
        ),
    ],
)
def test_mismatched_payload_types_are_config_errors(
    source: str, extractor: str, produces: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(wiring(source, extractor), default_registry(), file="c.yaml")
    assert info.value.path == "dataLayer.sources[0].extractors[0].pluginRef"
    assert f"produces {produces}" in info.value.message
    assert info.value.line is not None


@pytest.mark.parametrize(
    ("source", "extractor"),
    [
        (
            "- type: unix-socket-data-source\n  name: src\n"
            "  parameters: {socketPath: '/run/{name}.sock', format: json}",
            "json-extractor",
        ),
        (
            "- type: unix-socket-data-source\n  name: src\n"
            "  parameters: {socketPath: '/run/{name}.sock'}",
            "prometheus-metric",
        ),
        (
            "- type: file-data-source\n  name: src\n  parameters: {pathTemplate: '/s/{name}'}",
            "json-extractor",
        ),
        ("- type: push-data-source\n  name: src", "json-extractor"),
        (
            "- type: push-data-source\n  name: src\n  parameters: {format: prometheus}",
            "prometheus-metric",
        ),
    ],
)
def test_matching_payload_types_load(source: str, extractor: str) -> None:
    config = load_config_text(wiring(source, extractor), default_registry(), file="c.yaml")
    (binding,) = config.sources
    assert [e.type_name for e in binding.extractors] == [extractor]


@pytest.mark.parametrize(
    ("fields", "path", "fragment"),
    [
        ("[]", "plugins[0].parameters.fields", "at least one field"),
        ("[{path: ''}]", "plugins[0].parameters.fields[0].path", "must not be empty"),
        ("[{path: 'a..b'}]", "plugins[0].parameters.fields[0].path", "empty segment"),
        ("[{path: a, key: ''}]", "plugins[0].parameters.fields[0].key", "must not be empty"),
        ("[{path: a}, {path: b, key: a}]", "plugins[0].parameters.fields[1].key", "duplicate"),
        ("[{key: a}]", "plugins[0].parameters.fields[0].path", "required field is missing"),
        ("[{path: a, type: x}]", "plugins[0].parameters.fields[0].type", "unknown field"),
    ],
)
def test_parameter_errors_name_the_field(fields: str, path: str, fragment: str) -> None:
    text = (
        f"plugins:\n- type: json-extractor\n  parameters:\n    fields: {fields}\n"
        "- type: file-data-source\n  parameters: {pathTemplate: '/s/{name}.json'}\n"
        + DISCOVERY
        + "dataLayer:\n  sources:\n  - pluginRef: file-data-source\n"
        "    extractors: [{pluginRef: json-extractor}]\n"
        "  discovery: {pluginRef: file-discovery}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(text, default_registry(), file="c.yaml")
    assert info.value.path == path
    assert fragment in info.value.message
