"""Maps plugin type names to plugin classes.

Plugins reach the registry through the `datalayer.plugins` entry-point group:
each entry point names a function `register(registry)`. The built-in plugins
use the same mechanism, so the core never imports a plugin module and a
third-party package adds types by being installed, with no edit here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from importlib.metadata import entry_points

from datalayer.parameters import Parameters
from datalayer.plugin import DataSource, Discovery, Extractor, Plugin

ENTRY_POINT_GROUP = "datalayer.plugins"

log = logging.getLogger(__name__)


def plugin_kind(cls: type[Plugin]) -> str:
    """`source`, `extractor` or `discovery`: the contract a plugin class implements."""
    if issubclass(cls, DataSource):
        return "source"
    if issubclass(cls, Extractor):
        return "extractor"
    if issubclass(cls, Discovery):
        return "discovery"
    raise TypeError(f"{cls.__name__} implements no plugin contract")


class Registry:
    """Type name → plugin class; one per process is enough, tests make their own."""

    def __init__(self) -> None:
        self._types: dict[str, type[Plugin]] = {}

    def register(self, cls: type[Plugin]) -> type[Plugin]:
        """Add a plugin class under its `type_name`; usable as a class decorator."""
        plugin_kind(cls)  # reject classes that implement no contract
        declared = getattr(cls, "Parameters", None)
        if not (isinstance(declared, type) and issubclass(declared, Parameters)):
            raise TypeError(
                f"{cls.__module__}.{cls.__qualname__}.Parameters must subclass "
                f"datalayer.parameters.Parameters (a msgspec Struct), got {declared!r}"
            )
        name = cls.type_name
        existing = self._types.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"plugin type {name!r} is registered twice: "
                f"{existing.__module__}.{existing.__qualname__} and "
                f"{cls.__module__}.{cls.__qualname__}"
            )
        self._types[name] = cls
        return cls

    def get(self, type_name: str) -> type[Plugin] | None:
        return self._types.get(type_name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def __iter__(self) -> Iterator[type[Plugin]]:
        return iter(self._types[name] for name in self.names())

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._types

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Call every installed `register(registry)` hook of `group`."""
        for ep in entry_points(group=group):
            hook = ep.load()
            hook(self)
            log.debug("loaded plugins from entry point %s (%s)", ep.name, ep.value)


def default_registry() -> Registry:
    """A registry holding every installed plugin (built-in and third-party)."""
    registry = Registry()
    registry.load_entry_points()
    return registry
