"""The example out-of-tree plugin package, installed for real and used from YAML unchanged.

The package under `examples/datalayer-loadjson-plugin` is built with pip into a temporary
directory (not the project's venv, so the test leaves nothing behind and can run any
number of times), the directory is put on `sys.path`, and from there on the service finds
the package the way it finds any installed plugin: through the `datalayer.plugins`
entry-point group.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from datalayer.config import ConfigError, load_config_text
from datalayer.registry import default_registry
from mockpod.spec import PodSpec

from stack import eventually, running_stack

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "datalayer-loadjson-plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """pip-install the example into a fresh target directory and make it importable."""
    root = tmp_path_factory.mktemp("loadjson")
    source, target = root / "src", root / "site"
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the repo.
    skip = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    shutil.copytree(EXAMPLE, source, ignore=skip)
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    sys.path.insert(0, str(target))
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        for name in [m for m in sys.modules if m.split(".")[0] == "datalayer_loadjson"]:
            del sys.modules[name]


def test_entry_point_group_finds_the_installed_package(installed: Path) -> None:
    registry = default_registry()
    source = registry.get("load-json-data-source")
    extractor = registry.get("load-json-extractor")
    assert source is not None
    assert extractor is not None
    module = sys.modules[source.__module__]
    assert module.__file__ is not None
    assert Path(module.__file__).is_relative_to(installed)  # the installed copy, not the tree
    assert "metrics-data-source" in registry  # the built-ins are still there


def test_cli_lists_the_third_party_types(installed: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), *sys.path])}
    result = subprocess.run(
        [sys.executable, "-m", "server.cli", "plugins"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "load-json-data-source  [source]  produces LoadReport" in result.stdout
    assert "load-json-extractor  [extractor]  takes LoadReport" in result.stdout


CONFIG = """\
kind: DataLayerConfig
plugins:
- type: load-json-data-source
  parameters: {{path: /control}}
- type: load-json-extractor
  parameters: {{keys: [waiting, running], queueKey: waiting}}
- type: file-discovery
  parameters: {{path: {endpoints}, pollInterval: 50ms}}
dataLayer:
  interval: 50ms
  stalenessThreshold: 1s
  sources:
  - pluginRef: load-json-data-source
    extractors: [{{pluginRef: load-json-extractor}}]
  discovery: {{pluginRef: file-discovery}}
"""


async def test_third_party_types_run_in_the_service(installed: Path, tmp_path: Path) -> None:
    """The mock pod's `GET /control` is a JSON load report: `{"waiting": 2, "running": 1, ...}`."""
    pods = (PodSpec(name="pod-a"), PodSpec(name="pod-b"))
    async with running_stack(tmp_path, CONFIG, pods) as stack:
        await stack.control(0, {"waiting": 7, "running": 3})

        async def arrived() -> bool:
            endpoint = await stack.client.get_endpoint("pod-a")
            return not endpoint.stale and endpoint.metrics.custom.get("load.waiting") == 7.0

        await eventually(arrived, what="pod-a's load report over gRPC")
        endpoint = await stack.client.get_endpoint("pod-a")
        assert endpoint.metrics.custom["load.running"] == 3.0
        assert endpoint.metrics.waiting_queue_size == 7
        assert endpoint.last_error == ""
        assert set(endpoint.metrics.custom) == {"load.waiting", "load.running"}


def test_third_party_wiring_is_type_checked(installed: Path) -> None:
    text = (
        "plugins:\n- type: metrics-data-source\n- type: load-json-extractor\n"
        "- type: file-discovery\n  parameters: {path: e}\n"
        "dataLayer:\n  sources:\n  - pluginRef: metrics-data-source\n"
        "    extractors: [{pluginRef: load-json-extractor}]\n"
        "  discovery: {pluginRef: file-discovery}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(text, default_registry(), file="c.yaml")
    assert "takes LoadReport but source 'metrics-data-source'" in info.value.message
