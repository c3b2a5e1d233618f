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

Upstream `EndpointPickerConfig` files load too: their data-layer plugins and
`dataLayer` (or the older `data`) section are used, scheduling plugins and
sections are ignored with one warning, and without sources the default pair
(`metrics-data-source` + `core-metrics-extractor`) is injected unless
`injectDefaults: false`, as upstream does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

from datalayer.cluster.settings import ClusterSettings
from datalayer.epp_prefix import map_prefix_plugins
from datalayer.parameters import ParameterError, Parameters, PositiveDuration, decode
from datalayer.plugin import DataSource, Discovery, Extractor, Plugin
from datalayer.registry import Registry, plugin_kind
from datalayer.selector import EVERYTHING, SelectorError, parse_selector
from datalayer.wiring import CollectorSettings, SourceBinding

CONFIG_KIND = "DataLayerConfig"
EPP_KIND = "EndpointPickerConfig"
EPP_API_VERSIONS = ("llm-d.ai/v1alpha1", "inference.networking.x-k8s.io/v1alpha1")
#: What upstream injects when an EPP config wires no data-layer source.
DEFAULT_SOURCE_TYPE = "metrics-data-source"
DEFAULT_EXTRACTOR_TYPE = "core-metrics-extractor"
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


@dataclass
class DataLayerConfig:
    """A loaded, validated configuration: plugin instances already wired together."""

    file: str
    plugins: dict[str, Plugin]
    sources: list[SourceBinding]
    #: Usually one; several combine (each removes only what it reported). Empty only for an
    #: EPP config without one: the endpoints then come from the command line.
    discoveries: list[Discovery]
    collector: CollectorSettings
    warnings: list[str] = field(default_factory=list)
    kind: str = CONFIG_KIND
    #: The `cluster:` section; None: a replica on its own.
    cluster: ClusterSettings | None = None

    @property
    def discovery(self) -> Discovery | None:
        """The first discovery (most configs have exactly one)."""
        return self.discoveries[0] if self.discoveries else None

    @discovery.setter
    def discovery(self, value: Discovery) -> None:
        self.discoveries = [value]


# --- the document's own schema (plugins have theirs in their Parameters) ---


class _PluginEntry(Parameters):
    type: str
    name: str | None = None
    parameters: dict[str, Any] | None = None


class _PluginRef(Parameters):
    plugin_ref: str


class _SourceEntry(Parameters):
    plugin_ref: str
    extractors: list[_PluginRef] = []
    interval: PositiveDuration | None = None
    timeout: PositiveDuration | None = None
    #: A label selector: only matching endpoints are collected by this source.
    selector: str | None = None


class _DataLayerSection(Parameters):
    sources: list[_SourceEntry] = []
    #: One `{pluginRef}`, or a list of them to combine several discoveries.
    discovery: _PluginRef | list[_PluginRef] | None = None
    interval: PositiveDuration = CollectorSettings.interval
    timeout: PositiveDuration = CollectorSettings.timeout
    staleness_threshold: PositiveDuration = CollectorSettings.staleness_threshold


class _Document(Parameters):
    plugins: list[_PluginEntry] = []
    data_layer: _DataLayerSection | None = None
    #: The older name of `dataLayer` that the data-layer docs still show.
    data: _DataLayerSection | None = None
    api_version: str | None = None
    kind: str | None = None
    inject_defaults: bool | None = None
    #: A replica group (datalayer/cluster): who collects what, and who the peers are.
    cluster: ClusterSettings | None = None


_DOCUMENT_KEYS = frozenset(
    {"plugins", "dataLayer", "data", "apiVersion", "kind", "injectDefaults", "cluster"}
)


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
    # Relative file parameters mean "next to this config", wherever the process runs.
    return load_config_text(text, registry, file=file, base_dir=Path(path).resolve().parent)


def load_config_text(
    text: str, registry: Registry, file: str = "<config>", base_dir: Path | None = None
) -> DataLayerConfig:
    """Load a config from YAML text; `file` is only used to locate errors.

    `base_dir` is the folder relative file parameters (`FilePath` fields: discovery files,
    status-file templates, CA/cert/key files) are resolved against; None keeps them as
    written, relative to the working directory (text that came from no file).
    """
    return _Loader(text, registry, file, base_dir).load()


class _Loader:
    def __init__(self, text: str, registry: Registry, file: str, base_dir: Path | None) -> None:
        self.text = text
        self.base_dir = base_dir
        self.registry = registry
        self.file = file
        self.root_node: yaml.Node | None = None
        #: Indices of `plugins` entries an EPP config holds for the scheduler, not for us.
        self.ignored_plugins: set[int] = set()
        #: Name -> type of those entries: a reference to one is not "no plugin named".
        self.ignored_names: dict[str, str] = {}
        #: What `load` reports beside the result (the returned config holds this list).
        self.warnings: list[str] = []

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(self.file, path, message, line=self._line_of(path))

    def load(self) -> DataLayerConfig:
        data = self._parse_yaml()
        if not isinstance(data, dict):
            raise self.error("", "the document must be a mapping with `plugins` and `dataLayer`")
        kind = data.get("kind", CONFIG_KIND)
        warnings = self.warnings
        if kind == EPP_KIND:
            data = self._epp_data_layer_part(data, warnings)
        try:
            doc = decode(_Document, data)
        except ParameterError as exc:
            raise self.error(exc.field, exc.message) from None
        if doc.kind not in (None, CONFIG_KIND, EPP_KIND):
            raise self.error("kind", f"expected {CONFIG_KIND!r} or {EPP_KIND!r}, got {doc.kind!r}")
        if doc.data_layer is not None and doc.data is not None:
            raise self.error("data", "use either `dataLayer` or its older name `data`, not both")
        section_key = "data" if doc.data is not None else "dataLayer"
        section = doc.data or doc.data_layer
        if section is None:
            if kind != EPP_KIND:
                raise self.error("dataLayer", "required field is missing")
            section = _DataLayerSection()
        plugins = self._build_plugins(doc.plugins)
        self._check_one_source_per_gvk(plugins)
        collector = CollectorSettings(
            interval=section.interval,
            timeout=section.timeout,
            staleness_threshold=section.staleness_threshold,
        )
        inject = doc.inject_defaults if doc.inject_defaults is not None else kind == EPP_KIND
        entries = section.sources
        if not entries and inject:
            entries = [self._default_source(plugins, warnings)]
        sources = self._wire_sources(entries, plugins, collector, section_key)
        discoveries = self._discoveries(section.discovery, plugins, f"{section_key}.discovery")
        if not discoveries and kind != EPP_KIND:
            raise self.error(f"{section_key}.discovery", "required field is missing")
        used = {b.source.name for b in sources} | {d.name for d in discoveries}
        used |= {e.name for b in sources for e in b.extractors}
        warnings += [
            f"plugin {name!r} ({p.type_name}) is declared but not used by {section_key}"
            for name, p in plugins.items()
            if name not in used
        ]
        if doc.cluster is not None and (problem := doc.cluster.problem()) is not None:
            raise self.error(f"cluster.{problem[0]}", problem[1])
        return DataLayerConfig(
            self.file,
            plugins,
            sources,
            discoveries,
            collector,
            warnings,
            kind=str(kind),
            cluster=doc.cluster,
        )

    def _discoveries(
        self, refs: _PluginRef | list[_PluginRef] | None, plugins: dict[str, Plugin], path: str
    ) -> list[Discovery]:
        if refs is None:
            return []
        if isinstance(refs, _PluginRef):
            return [self._resolve(plugins, refs.plugin_ref, f"{path}.pluginRef", Discovery)]
        if not refs:
            raise self.error(path, "at least one discovery is required")
        found: list[Discovery] = []
        for i, ref in enumerate(refs):
            discovery = self._resolve(plugins, ref.plugin_ref, f"{path}[{i}].pluginRef", Discovery)
            if discovery in found:
                raise self.error(f"{path}[{i}].pluginRef", f"{ref.plugin_ref!r} is listed twice")
            found.append(discovery)
        return found

    def _epp_data_layer_part(self, data: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
        """Keep what the data layer uses from an EndpointPickerConfig; warn once about the rest."""
        api_version = data.get("apiVersion")
        if api_version not in EPP_API_VERSIONS:
            raise self.error(
                "apiVersion",
                f"an {EPP_KIND} needs apiVersion {' or '.join(EPP_API_VERSIONS)}, "
                f"got {api_version!r}",
            )
        ignored = [f"section {key}" for key in data if key not in _DOCUMENT_KEYS]
        kept: dict[str, Any] = {k: v for k, v in data.items() if k in _DOCUMENT_KEYS}
        # Scheduler plugins wired into dataLayer: the KV-block index runs here, the rest not.
        kept, notes, set_aside = map_prefix_plugins(kept, self.registry)
        plugins = kept.get("plugins")
        for index, entry in enumerate(plugins if isinstance(plugins, list) else ()):
            type_name = entry.get("type") if isinstance(entry, dict) else None
            name = entry.get("name") or type_name if isinstance(entry, dict) else None
            if name in set_aside:
                ignored.append(f"plugin {name} ({type_name}), its extractors run elsewhere")
                self.ignored_plugins.add(index)
            elif isinstance(type_name, str) and type_name not in self.registry:
                ignored.append(f"plugin {entry.get('name') or type_name} ({type_name})")
                self.ignored_plugins.add(index)
                self.ignored_names[str(entry.get("name") or type_name)] = type_name
        if ignored or notes:
            text = "ignored (scheduling, not data layer): " + ", ".join(ignored)
            warnings.append("; ".join([text, *notes]) if notes else text)
        return kept

    def _default_source(self, plugins: dict[str, Plugin], warnings: list[str]) -> _SourceEntry:
        """Upstream's default wiring, reusing declared plugins of those types when present."""
        refs = []
        for type_name in (DEFAULT_SOURCE_TYPE, DEFAULT_EXTRACTOR_TYPE):
            declared = [p for p in plugins.values() if p.type_name == type_name]
            if declared:
                refs.append(declared[0].name)
                continue
            cls = self.registry.get(type_name)
            if cls is None:
                raise self.error("injectDefaults", f"default plugin type {type_name!r} is missing")
            name = type_name if type_name not in plugins else f"{type_name}-default"
            plugins[name] = cls(name, decode(cls.Parameters, {}))
            refs.append(name)
        warnings.append(
            f"no data-layer sources configured: injected {refs[0]} with {refs[1]} "
            "(set injectDefaults: false to disable)"
        )
        return _SourceEntry(plugin_ref=refs[0], extractors=[_PluginRef(refs[1])])

    def _parse_yaml(self) -> Any:
        """The document, parsed once: its nodes keep the line marks `_line_of` reads."""
        loader = yaml.SafeLoader(self.text)
        try:
            self.root_node = loader.get_single_node()
            return None if self.root_node is None else loader.construct_document(self.root_node)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(self.file, "", f"invalid YAML: {problem}", line=line) from None
        finally:
            loader.dispose()

    def _build_plugins(self, entries: list[_PluginEntry]) -> dict[str, Plugin]:
        plugins: dict[str, Plugin] = {}
        for i, entry in enumerate(entries):
            if i in self.ignored_plugins:
                continue
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
                params = decode(cls.Parameters, entry.parameters, params_path, self.base_dir)
            except ParameterError as exc:
                raise self.error(exc.field, exc.message) from None
            try:
                plugins[name] = cls(name, params)
            except ParameterError as exc:
                sub = f"{params_path}.{exc.field}" if exc.field else params_path
                raise self.error(sub, exc.message) from None
        return plugins

    def _check_one_source_per_gvk(self, plugins: dict[str, Plugin]) -> None:
        """Two `k8s-notification-source`s of one kind would watch it twice (upstream: one)."""
        seen: dict[object, str] = {}
        for name, plugin in plugins.items():
            gvk = getattr(plugin, "gvk", None)
            if gvk is None or not isinstance(plugin, DataSource):
                continue
            if gvk in seen:
                raise self.error(
                    "plugins",
                    f"{name!r} watches {gvk} like {seen[gvk]!r}: one source per kind",
                )
            seen[gvk] = name

    def _resolve(self, plugins: dict[str, Plugin], ref: str, path: str, kind: type[_P]) -> _P:
        plugin = plugins.get(ref)
        if plugin is None and ref in self.ignored_names:
            raise self.error(
                path,
                f"plugin {ref!r} ({self.ignored_names[ref]}) is declared in `plugins`, but its "
                f"type is not a data-layer plugin this service runs (it is left to the scheduler)",
            )
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
        section_key: str,
    ) -> list[SourceBinding]:
        if not entries:
            raise self.error(f"{section_key}.sources", "at least one source is required")
        bindings: list[SourceBinding] = []
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            path = f"{section_key}.sources[{i}]"
            source = self._resolve(plugins, entry.plugin_ref, f"{path}.pluginRef", DataSource)
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
            interval = _first_set(entry.interval, source.default_interval, collector.interval)
            timeout = entry.timeout if entry.timeout is not None else collector.timeout
            self._check_positive(f"{path}.interval", interval)
            if interval < collector.interval:
                # As upstream: a source is never polled faster than the base tick.
                self.warnings.append(
                    f"{path}.interval: {interval:g}s is under the base tick "
                    f"({collector.interval:g}s); using {collector.interval:g}s"
                )
                interval = collector.interval
            self._check_positive(f"{path}.timeout", timeout)
            selector = EVERYTHING
            if entry.selector:
                try:
                    selector = parse_selector(entry.selector)
                except SelectorError as exc:
                    raise self.error(f"{path}.selector", str(exc)) from None
            bindings.append(SourceBinding(source, extractors, interval, timeout, selector))
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


def _first_set(*values: float | None) -> float:
    return next(v for v in values if v is not None)


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
    if isinstance(params, msgspec.Struct):
        built = msgspec.to_builtins(params, enc_hook=float)  # YAML names; durations in seconds
        return built if isinstance(built, dict) else {}
    return {}
