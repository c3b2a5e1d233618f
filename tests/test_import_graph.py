"""The architecture as a test: data flows one way, and the import graph says so.

Every `import` in the project's packages, at module level or inside a function (a lazy
import is still a dependency), is an edge. The rules: no cycles between modules; the core
(`datalayer`) imports no plugin, server, console or mock-pod code; plugins import no server
or console code; the console imports no server; only the `demo` command uses the mock pod,
and the CLI loads both only lazily.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("datalayer", "plugins", "server", "console", "mockpod")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "_pb2" in path.name:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = modules()


def imports(path: Path, name: str) -> Iterator[tuple[str, bool]]:
    """(imported project module, at module level?) for every import in `path`."""
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            module = _project_module(target)
            if module is not None and module != name:
                yield module, id(node) in top_level
                break


def _project_module(target: str) -> str | None:
    """The project module `target` names (or the nearest package that is one)."""
    parts = target.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


GRAPH = {name: list(imports(path, name)) for name, path in MODULES.items()}


def test_there_are_modules_to_check() -> None:
    assert "datalayer.collector.runtime" in GRAPH
    assert "plugins.sources.metrics.source" in GRAPH
    assert any(GRAPH.values())


def test_no_import_cycles() -> None:
    edges = {name: {target for target, _ in targets} for name, targets in GRAPH.items()}
    # A package's __init__ re-exporting its own submodules is not a dependency of theirs.
    for name, targets in edges.items():
        edges[name] = {t for t in targets if not t.startswith(name + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("datalayer", ("plugins", "server", "console", "mockpod")),
        ("plugins", ("server", "console")),
        ("console", ("server", "plugins", "mockpod")),
    ],
)
def test_layers_import_only_downwards(layer: str, forbidden: tuple[str, ...]) -> None:
    wrong = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name == layer or name.startswith(layer + ".")
        for target, _ in targets
        if target.split(".")[0] in forbidden
    ]
    assert wrong == []


def test_the_production_server_never_loads_the_mock_pod() -> None:
    """Only the `demo` command (server.demo) uses the mock pod, and the CLI loads it, and the
    mock pod's own CLI, lazily: `serve` never imports a line of test tooling."""
    demo_or_mock = ("server.demo", "mockpod")
    wrong = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name.startswith("server") and name != "server.demo"
        for target, top in targets
        if target.startswith(demo_or_mock) and (top or name != "server.cli")
    ]
    assert wrong == []
