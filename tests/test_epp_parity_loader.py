"""Issue 14 (a): a plugin declared in an EPP file's `plugins:` is never "no plugin named".

The loader sets aside an EndpointPickerConfig's scheduling plugins; a `dataLayer` reference to
one used to be reported as missing although the file declares it, which sent the operator
looking for a typo that was not there.
"""

from __future__ import annotations

import pytest

from datalayer.config import ConfigError, load_config_text
from datalayer.registry import Registry, default_registry

SCHEDULER_AS_SOURCE = """\
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: metrics-data-source
- type: core-metrics-extractor
- type: some-scheduler-side-producer
  name: producer
dataLayer:
  sources:
  - pluginRef: metrics-data-source
    extractors: [{pluginRef: core-metrics-extractor}]
  - pluginRef: producer
    extractors: [{pluginRef: core-metrics-extractor}]
"""


@pytest.fixture(scope="module")
def registry() -> Registry:
    return default_registry()


def test_a_declared_scheduling_plugin_is_not_reported_missing(registry: Registry) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(SCHEDULER_AS_SOURCE, registry, file="epp.yaml")
    error = caught.value
    assert error.path == "dataLayer.sources[1].pluginRef"
    assert "no plugin named" not in error.message
    assert "'producer' (some-scheduler-side-producer) is declared in `plugins`" in error.message
    assert error.line == 12


def test_an_undeclared_reference_is_still_reported_missing(registry: Registry) -> None:
    text = SCHEDULER_AS_SOURCE.replace("pluginRef: producer", "pluginRef: typo")
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, registry, file="epp.yaml")
    assert "no plugin named 'typo' in `plugins`" in caught.value.message
