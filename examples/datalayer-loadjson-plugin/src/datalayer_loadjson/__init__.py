"""An out-of-tree datalayer plugin package: `load-json-data-source` + `load-json-extractor`.

It uses only the public contracts (`datalayer.plugin`, `datalayer.model`,
`datalayer.registry`) and reaches the service through the `datalayer.plugins`
entry-point group declared in its `pyproject.toml`.
"""

from __future__ import annotations

from datalayer.registry import Registry
from datalayer_loadjson.extractor import LoadJsonExtractor, LoadJsonExtractorParameters
from datalayer_loadjson.source import LoadJsonDataSource, LoadJsonSourceParameters, LoadReport


def register(registry: Registry) -> None:
    """The entry point: add this package's plugin types to the service's registry."""
    registry.register(LoadJsonDataSource)
    registry.register(LoadJsonExtractor)


__all__ = [
    "LoadJsonDataSource",
    "LoadJsonExtractor",
    "LoadJsonExtractorParameters",
    "LoadJsonSourceParameters",
    "LoadReport",
    "register",
]
