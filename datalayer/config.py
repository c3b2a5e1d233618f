# mypy: disable-error-code="type-abstract"
# (the plugin contracts are passed as kinds to check isinstance against, never instantiated)
"""Loads the YAML configuration (the EPP shape) into wired plugin instances.

Strict on purpose: an operator's typo must fail at start-up with the file,
the line, the path of the offending entry and what is wrong, never be
ignored and surface later as missing data.

    apiVersion: datalayer.llm-d.ai/v1alpha1      # optional header
    kind: DataLayerConfig
    plugins:
    - type: metrics-data-source
      parameters: {scheme: http, path: /metrics}
    - type: core-metrics-extractor
    - type: file-discovery
      parameters: {path: endpoints.yaml}
    dataLayer:
      interval: 50ms                # global tick, default 50ms
      sources:
      - pluginRef: metrics-data-source
        extractors: [{pluginRef: core-metrics-extractor}]
      discovery: {pluginRef: file-discovery}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from datalayer.params import DecodeError, Duration, decode_dataclass
from datalayer.plugin import Discovery, Extractor, ParameterError, Plugin, PollingDataSource
from datalayer.registry import Registry, plugin_kind

CONFIG_KIND = "DataLayerConfig"
_P = TypeVar("_P", bound=Plugin)
MAX_CONFIG_BYTES = 1 << 20


class ConfigError(ValueError):
    """A configuration problem, located by file, line and path."""

    def __init__(self, file: str, path: str, message: str, line: int | None = None) -> None:
        self.file = file
        self.path = path
        self.message = message
        self.line = line
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {path}: {message}" if path else f"{where}: {message}")


@dataclass(frozen=True)
class CollectorSettings:
    """How often and how patiently endpoints are polled; defaults follow upstream."""

    interval: Duration = Duration(0.05)
    timeout: Duration = Duration(1.0)
    staleness_threshold: Duration = Duration(2.0)


@dataclass
class SourceBinding:
    """One configured source with its extractors and its own timing."""

    source: PollingDataSource
    extractors: list[Extractor]
    interval: float
    timeout: float


@dataclass
class DataLayerConfig:
    """A loaded, validated configuration: plugin instances already wired together."""

    file: str
    plugins: dict[str, Plugin]
    sources: list[SourceBinding]
    discovery: Discovery
    collector: CollectorSettings
    warnings: list[str] = field(default_factory=list)


# --- the document's own schema (plugins have theirs in their Parameters) ---


@dataclass
class _PluginEntry:
    type: str
    name: str | None = None
    parameters: dict[str, Any] | None = None


@dataclass
class _PluginRef:
    plugin_ref: str


@dataclass
class _SourceEntry:
    plugin_ref: str
    extractors: list[_PluginRef] = field(default_factory=list)
    interval: Duration | None = None
    timeout: Duration | None = None


@dataclass
class _DataLayerSection:
    sources: list[_SourceEntry]
    discovery: _PluginRef
    interval: Duration = CollectorSettings.interval
    timeout: Duration = CollectorSettings.timeout
    staleness_threshold: Duration = CollectorSettings.staleness_threshold


@dataclass
class _Document:
    plugins: list[_PluginEntry]
    data_layer: _DataLayerSection
    api_version: str | None = None
    kind: str | None = None


def load_config_file(path: str | Path, registry: Registry) -> DataLayerConfig:
    """Read and load a config file; every problem is a ConfigError naming the file."""
    file = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(file, "", f"larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "", f"not UTF-8: {exc}") from None
    return load_config_text(text, registry, file=file)


def load_config_text(text: str, registry: Registry, file: str = "<config>") -> DataLayerConfig:
    """Load a config from YAML text; `file` is only used to locate errors."""
    return _Loader(text, registry, file).load()


class _Loader:
    def __init__(self, text: str, registry: Registry, file: str) -> None:
        self.text = text
        self.registry = registry
        self.file = file
        self.root_node: yaml.Node | None = None

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(self.file, path, message, line=self._line_of(path))

    def load(self) -> DataLayerConfig:
        data = self._parse_yaml()
        if not isinstance(data, dict):
            raise self.error("", "the document must be a mapping with `plugins` and `dataLayer`")
        try:
            doc: _Document = decode_dataclass(_Document, data)
        except DecodeError as exc:
            raise self.error(exc.path, exc.message) from None
        if doc.kind is not None and doc.kind != CONFIG_KIND:
            raise self.error("kind", f"expected {CONFIG_KIND!r}, got {doc.kind!r}")
        plugins = self._build_plugins(doc.plugins)
        section = doc.data_layer
        collector = CollectorSettings(
            interval=section.interval,
            timeout=section.timeout,
            staleness_threshold=section.staleness_threshold,
        )
        self._check_positive("dataLayer.interval", collector.interval)
        self._check_positive("dataLayer.timeout", collector.timeout)
        self._check_positive("dataLayer.stalenessThreshold", collector.staleness_threshold)
        sources = self._wire_sources(section.sources, plugins, collector)
        discovery = self._resolve(
            plugins, section.discovery.plugin_ref, "dataLayer.discovery.pluginRef", Discovery
        )
        used = {b.source.name for b in sources} | {discovery.name}
        used |= {e.name for b in sources for e in b.extractors}
        warnings = [
            f"plugin {name!r} ({p.type_name}) is declared but not used by dataLayer"
            for name, p in plugins.items()
            if name not in used
        ]
        return DataLayerConfig(self.file, plugins, sources, discovery, collector, warnings)

    def _parse_yaml(self) -> Any:
        try:
            self.root_node = yaml.compose(self.text, Loader=yaml.SafeLoader)
            return yaml.safe_load(self.text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(self.file, "", f"invalid YAML: {problem}", line=line) from None

    def _build_plugins(self, entries: list[_PluginEntry]) -> dict[str, Plugin]:
        plugins: dict[str, Plugin] = {}
        for i, entry in enumerate(entries):
            path = f"plugins[{i}]"
            cls = self.registry.get(entry.type)
            if cls is None:
                known = ", ".join(self.registry.names())
                raise self.error(
                    f"{path}.type", f"unknown plugin type {entry.type!r} (known: {known})"
                )
            name = entry.name if entry.name is not None else entry.type
            if not name:
                raise self.error(f"{path}.name", "must not be empty")
            if name in plugins:
                raise self.error(f"{path}.name", f"duplicate plugin name {name!r}")
            params_path = f"{path}.parameters"
            try:
                params = decode_dataclass(cls.Parameters, entry.parameters, params_path)
                plugins[name] = cls(name, params)
            except DecodeError as exc:
                raise self.error(exc.path, exc.message) from None
            except ParameterError as exc:
                sub = f"{params_path}.{exc.field}" if exc.field else params_path
                raise self.error(sub, exc.message) from None
        return plugins

    def _resolve(self, plugins: dict[str, Plugin], ref: str, path: str, kind: type[_P]) -> _P:
        plugin = plugins.get(ref)
        if plugin is None:
            known = ", ".join(sorted(plugins)) or "none"
            raise self.error(path, f"no plugin named {ref!r} in `plugins` (declared: {known})")
        if not isinstance(plugin, kind):
            raise self.error(
                path,
                f"plugin {ref!r} ({plugin.type_name}) is {_a(plugin_kind(type(plugin)))}, "
                f"not {_a(plugin_kind(kind))}",
            )
        return plugin

    def _wire_sources(
        self,
        entries: list[_SourceEntry],
        plugins: dict[str, Plugin],
        collector: CollectorSettings,
    ) -> list[SourceBinding]:
        if not entries:
            raise self.error("dataLayer.sources", "at least one source is required")
        bindings: list[SourceBinding] = []
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            path = f"dataLayer.sources[{i}]"
            source = self._resolve(
                plugins, entry.plugin_ref, f"{path}.pluginRef", PollingDataSource
            )
            if source.name in seen:
                raise self.error(f"{path}.pluginRef", f"source {source.name!r} is listed twice")
            seen.add(source.name)
            if not entry.extractors:
                raise self.error(f"{path}.extractors", "a source needs at least one extractor")
            extractors: list[Extractor] = []
            for j, ref in enumerate(entry.extractors):
                ref_path = f"{path}.extractors[{j}].pluginRef"
                extractor = self._resolve(plugins, ref.plugin_ref, ref_path, Extractor)
                problem = source.check_extractor(extractor)
                if problem is not None:
                    raise self.error(ref_path, problem)
                extractors.append(extractor)
            interval = entry.interval if entry.interval is not None else collector.interval
            timeout = entry.timeout if entry.timeout is not None else collector.timeout
            self._check_positive(f"{path}.interval", interval)
            self._check_positive(f"{path}.timeout", timeout)
            for extractor in extractors:
                source.add_extractor(extractor)
            bindings.append(SourceBinding(source, extractors, interval, timeout))
        return bindings

    def _check_positive(self, path: str, value: float) -> None:
        if value <= 0:
            raise self.error(path, "must be greater than zero")

    def _line_of(self, path: str) -> int | None:
        """The 1-based line of the deepest node of `path` that exists in the document."""
        node = self.root_node
        if node is None or not path:
            return None
        line: int = node.start_mark.line + 1
        for key in _split_path(path):
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode) and isinstance(key, str):
                for k, v in node.value:
                    if getattr(k, "value", None) == key:
                        line = k.start_mark.line + 1
                        child = v
                        break
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(key, int)
                and key < len(node.value)
            ):
                child = node.value[key]
            if child is None:
                break
            if isinstance(key, int):
                line = child.start_mark.line + 1
            node = child
        return line


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _split_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for segment in path.split("."):
        name, _, rest = segment.partition("[")
        if name:
            parts.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            parts.append(int(index))
            rest = rest.removeprefix("[")
    return parts


def plugin_parameters_as_dict(plugin: Plugin) -> dict[str, Any]:
    """The decoded parameters of a plugin, for start-up logs and the status page."""
    params = plugin.params
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return dataclasses.asdict(params)
    return {}
