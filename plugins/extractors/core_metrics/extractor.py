"""`core-metrics-extractor`: the typed scheduler signals from a model server's `/metrics`.

Engines are data: each is an `EngineMapping` (which specs feed which field),
the built-in ones live in `BUILTIN_ENGINES`, and `engineConfigs` entries
override or add to them. The code below only knows how to aggregate.

Policies, chosen so a healthy pod never produces an error every tick:

- Counts (waiting, running) sum every matching series and KV use averages
  them, so a data-parallel pod (`engine="0"`, `engine="1"`, ...) is read
  whole; NaN and infinite series are skipped; no usable series is an error
  for that field only, naming the metric.
- Several specs for one field are alternatives in preference order: vLLM's
  KV use reads `vllm:kv_cache_usage_perc` and only falls back to the pre-V1
  `vllm:gpu_cache_usage_perc` when the newer family has no usable series.
- LoRA: the series with the largest value (the time of its last change)
  wins. An absent LoRA family means "no adapters": empty lists and
  `max_active_models` 0, no error (servers without `--enable-lora`). Those
  values are *defaults*, not readings (`set_metric(..., default=True)`): a
  page with no wanted sample at all (unrelated metrics, HELP/TYPE lines only)
  yields no reading, and the collector counts it as a failed read.
- A family whose lines hit one of the scanner's caps (more than 64 series, a
  line or label value too long; `MetricSamples.caps`) is an error for every
  field it feeds, naming the cap: what was kept is incomplete, so a sum of it
  would under-report and "absent" would claim no adapters.
- Cache info (block size, block count) is static configuration that older
  servers do not expose: an absent family is not an error and leaves the
  fields unset. A family that is present but lacks the configured label, or
  holds a non-integer, is an error for that field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar, Final

from datalayer.model import MAX_LIST_ITEMS, EndpointSpec, EndpointUpdate
from datalayer.parameters import NonEmptyStr, Parameters
from datalayer.plugin import Extractor, ParameterError
from plugins.shared.prometheus.custom import read_custom
from plugins.shared.prometheus.samples import MetricSamples, Sample
from plugins.shared.prometheus.spec import MetricSpec

#: The label kept for compatibility with upstream's default engine-type key.
FALLBACK_ENGINE_LABEL: Final = "inference.networking.k8s.io/engine-type"
#: Upstream registers the default engine's mapping under this name.
RESERVED_ENGINE_NAME: Final = "default"
_LORA_FIELDS: Final = ("active_models", "waiting_models", "max_active_models")


class CustomMetricConfig(Parameters):
    """One `customMetrics[]` entry: a metric stored in `metrics.custom[attributeKey]`."""

    attribute_key: NonEmptyStr
    metric_spec: str
    optional: bool = False


class EngineConfig(Parameters):
    """One `engineConfigs[]` entry. For a built-in engine, an unset (None) field keeps the
    built-in spec and an empty string disables it; for a new engine, unset means disabled."""

    name: str
    queued_requests_spec: str | None = None
    running_requests_spec: str | None = None
    kv_usage_spec: str | None = None
    lora_spec: str | None = None
    cache_info_spec: str | None = None
    cache_block_size_label_name: str | None = None
    cache_num_blocks_label_name: str | None = None
    #: For engines exposing the cache geometry as gauges rather than info labels.
    cache_block_size_spec: str | None = None
    cache_num_blocks_spec: str | None = None
    #: Extra scalars for `metrics.custom`; replaces a built-in engine's list when set.
    custom_metrics: list[CustomMetricConfig] | None = None


class CoreMetricsParameters(Parameters):
    """`parameters` of `core-metrics-extractor` (YAML keys are the camelCase forms)."""

    engine_label_key: NonEmptyStr = "llm-d.ai/engine-type"
    default_engine: str = "vllm"
    engine_configs: list[EngineConfig] = []


@dataclass(frozen=True, slots=True)
class EngineMapping:
    """Which series feed which field for one engine; a tuple holds alternatives in order."""

    name: str
    queued: tuple[MetricSpec, ...] = ()
    running: tuple[MetricSpec, ...] = ()
    kv_usage: tuple[MetricSpec, ...] = ()
    lora: tuple[MetricSpec, ...] = ()
    cache_info: tuple[MetricSpec, ...] = ()
    cache_block_size_label: str = "block_size"
    cache_num_blocks_label: str = "num_gpu_blocks"
    cache_block_size: tuple[MetricSpec, ...] = ()
    cache_num_blocks: tuple[MetricSpec, ...] = ()
    #: (key in metrics.custom, spec, optional)
    custom: tuple[tuple[str, MetricSpec, bool], ...] = ()

    def specs(self) -> Iterable[MetricSpec]:
        """Every spec of this engine, for the names the source must scan."""
        yield from self.queued
        yield from self.running
        yield from self.kv_usage
        yield from self.lora
        yield from self.cache_info
        yield from self.cache_block_size
        yield from self.cache_num_blocks
        yield from (spec for _, spec, _ in self.custom)


def _specs(*texts: str) -> tuple[MetricSpec, ...]:
    return tuple(MetricSpec.parse(text) for text in texts)


def _with_aliases(engines: dict[str, EngineMapping]) -> dict[str, EngineMapping]:
    """Add `triton`, upstream's engine-type value for Triton with the TensorRT-LLM backend
    (the same series as `triton-tensorrt-llm`), so pods labelled either way are read."""
    triton = replace(engines["triton-tensorrt-llm"], name="triton")
    return {**engines, "triton": triton}


#: The built-in engine mappings (metric names per engine and field), as data.
BUILTIN_ENGINES: Final[Mapping[str, EngineMapping]] = _with_aliases(
    {
        mapping.name: mapping
        for mapping in (
            EngineMapping(
                "vllm",
                queued=_specs("vllm:num_requests_waiting"),
                running=_specs("vllm:num_requests_running"),
                kv_usage=_specs("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
                lora=_specs("vllm:lora_requests_info"),
                cache_info=_specs("vllm:cache_config_info"),
            ),
            EngineMapping(
                "sglang",
                queued=_specs("sglang:num_queue_reqs"),
                running=_specs("sglang:num_running_reqs"),
                kv_usage=_specs("sglang:token_usage"),
                cache_info=_specs("sglang:cache_config_info"),
                cache_block_size_label="page_size",
                cache_num_blocks_label="num_pages",
            ),
            EngineMapping(
                "trtllm-serve",
                queued=_specs("trtllm_num_requests_waiting"),
                running=_specs("trtllm_num_requests_running"),
                kv_usage=_specs("trtllm_kv_cache_utilization"),
                cache_block_size=_specs("trtllm_kv_cache_tokens_per_block"),
                cache_num_blocks=_specs("trtllm_kv_cache_max_blocks"),
            ),
            EngineMapping(
                "triton-tensorrt-llm",
                queued=_specs('nv_trt_llm_request_metrics{request_type="waiting"}'),
                running=_specs('nv_trt_llm_request_metrics{request_type="scheduled"}'),
                kv_usage=_specs(
                    'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"}'
                ),
                cache_block_size=_specs(
                    'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="tokens_per"}'
                ),
                cache_num_blocks=_specs(
                    'nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max"}'
                ),
            ),
        )
    }
)

# EngineConfig spec field -> (EngineMapping field, YAML key).
_SPEC_FIELDS: Final = {
    "queued_requests_spec": ("queued", "queuedRequestsSpec"),
    "running_requests_spec": ("running", "runningRequestsSpec"),
    "kv_usage_spec": ("kv_usage", "kvUsageSpec"),
    "lora_spec": ("lora", "loraSpec"),
    "cache_info_spec": ("cache_info", "cacheInfoSpec"),
    "cache_block_size_spec": ("cache_block_size", "cacheBlockSizeSpec"),
    "cache_num_blocks_spec": ("cache_num_blocks", "cacheNumBlocksSpec"),
}
_LABEL_FIELDS: Final = {
    "cache_block_size_label_name": ("cache_block_size_label", "cacheBlockSizeLabelName"),
    "cache_num_blocks_label_name": ("cache_num_blocks_label", "cacheNumBlocksLabelName"),
}


def build_engines(params: CoreMetricsParameters) -> dict[str, EngineMapping]:
    """The engine table: built-ins overlaid with `engineConfigs`; ParameterError if invalid."""
    engines = dict(BUILTIN_ENGINES)
    seen: dict[str, int] = {}
    for index, config in enumerate(params.engine_configs):
        where = f"engineConfigs[{index}]"
        name = config.name.strip() if isinstance(config.name, str) else ""
        if not name:
            raise ParameterError(f"{where}.name", "engine name must not be empty")
        if name == RESERVED_ENGINE_NAME:
            raise ParameterError(f"{where}.name", f"engine name {name!r} is reserved")
        if name in seen:
            raise ParameterError(
                f"{where}.name", f"duplicate engine {name!r} (also engineConfigs[{seen[name]}])"
            )
        seen[name] = index
        engines[name] = _overlay(engines.get(name, EngineMapping(name)), config, where)
    if params.default_engine not in engines:
        known = ", ".join(sorted(engines))
        raise ParameterError(
            "defaultEngine", f"unknown engine {params.default_engine!r} (known: {known})"
        )
    return engines


def _overlay(base: EngineMapping, config: EngineConfig, where: str) -> EngineMapping:
    changes: dict[str, object] = {}
    for attr, (target, key) in _SPEC_FIELDS.items():
        text = getattr(config, attr)
        if text is None:
            continue
        try:
            changes[target] = (MetricSpec.parse(text),) if text.strip() else ()
        except ValueError as exc:
            raise ParameterError(f"{where}.{key}", str(exc)) from None
    for attr, (target, key) in _LABEL_FIELDS.items():
        label = getattr(config, attr)
        if label is None or label == "":
            continue
        if not label.isidentifier() or not label.isascii():
            raise ParameterError(f"{where}.{key}", f"invalid label name {label!r}")
        changes[target] = label
    if config.custom_metrics is not None:
        changes["custom"] = _custom_metrics(config.custom_metrics, f"{where}.customMetrics")
    return replace(base, **changes)  # type: ignore[arg-type]


def _custom_metrics(
    entries: Sequence[CustomMetricConfig], where: str
) -> tuple[tuple[str, MetricSpec, bool], ...]:
    seen: set[str] = set()
    out = []
    for index, entry in enumerate(entries):
        if entry.attribute_key in seen:
            raise ParameterError(
                f"{where}[{index}].attributeKey", f"duplicate key {entry.attribute_key!r}"
            )
        seen.add(entry.attribute_key)
        try:
            spec = MetricSpec.parse(entry.metric_spec)
        except ValueError as exc:
            raise ParameterError(f"{where}[{index}].metricSpec", str(exc)) from None
        out.append((entry.attribute_key, spec, entry.optional))
    return tuple(out)


def _usable(samples: MetricSamples, spec: MetricSpec) -> list[float]:
    """Values of the finite series `spec` selects (NaN/Inf say nothing about load)."""
    return [
        s.value
        for s in samples.get(spec.name, ())
        if math.isfinite(s.value) and spec.matches(s.labels)
    ]


def _first_usable(samples: MetricSamples, alternatives: Sequence[MetricSpec]) -> list[float] | None:
    for spec in alternatives:
        values = _usable(samples, spec)
        if values:
            return values
    return None


def _capped(caps: Mapping[str, str], alternatives: Sequence[MetricSpec]) -> str | None:
    """The field error for the first of `alternatives` whose lines hit a scan cap, if any."""
    if caps:
        for spec in alternatives:
            note = caps.get(spec.name)
            if note is not None:
                return f"{spec.name}: {note}"
    return None


def _missing(alternatives: Sequence[MetricSpec], what: str = "usable") -> str:
    names = " or ".join(str(spec) for spec in alternatives)
    return f"no {what} series of {names}"


def _selected(samples: MetricSamples, alternatives: Sequence[MetricSpec]) -> list[Sample]:
    for spec in alternatives:
        found = [s for s in samples.get(spec.name, ()) if spec.matches(s.labels)]
        if found:
            return found
    return []


def _as_int(text: str | None) -> int | None:
    """An integer label value; vLLM writes ints, but tolerate `16.0`."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _adapters(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(sorted({name.strip() for name in text.split(",")} - {""}))


class CoreMetricsExtractor(Extractor):
    """Reads queue, running, KV-cache, LoRA and cache geometry for each engine type.

    >>> from plugins.shared.prometheus.scan import SelectiveScanner
    >>> extractor = CoreMetricsExtractor("core", CoreMetricsParameters())
    >>> page = b'vllm:num_requests_waiting{engine="0"} 2\\n'
    >>> page += b'vllm:num_requests_waiting{engine="1"} 3\\n'
    >>> out = EndpointUpdate()
    >>> samples = SelectiveScanner(extractor.required_names()).scan(page)
    >>> extractor.extract(samples, EndpointSpec("pod", "10.0.0.1", 8000), out)
    >>> out.metrics["waiting_queue_size"]
    5
    """

    type_name = "core-metrics-extractor"
    Parameters = CoreMetricsParameters
    input_type = MetricSamples
    description: ClassVar[str] = "queue, running, KV-cache, LoRA and cache info per engine type"

    def __init__(self, name: str, params: CoreMetricsParameters) -> None:
        super().__init__(name, params)
        self.engines = build_engines(params)
        self.default = self.engines[params.default_engine]
        self.label_key = params.engine_label_key
        self._names = frozenset(
            spec.name for mapping in self.engines.values() for spec in mapping.specs()
        )

    def required_names(self) -> frozenset[str]:
        return self._names

    def engine_for(self, endpoint: EndpointSpec) -> EngineMapping:
        """The endpoint's engine from its labels; the default engine when unlabelled or unknown."""
        labels = endpoint.labels
        engine = labels.get(self.label_key) or labels.get(FALLBACK_ENGINE_LABEL)
        if engine is None:
            return self.default
        return self.engines.get(engine, self.default)

    def extract(self, payload: MetricSamples, endpoint: EndpointSpec, out: EndpointUpdate) -> None:
        mapping = self.engine_for(endpoint)
        caps = payload.caps  # read once: empty on every page that hit no scan cap
        self._counts(payload, caps, mapping.queued, "waiting_queue_size", out)
        self._counts(payload, caps, mapping.running, "running_requests_size", out)
        if mapping.kv_usage:
            capped = _capped(caps, mapping.kv_usage) if caps else None
            values = None if capped else _first_usable(payload, mapping.kv_usage)
            if capped:
                out.error("kv_cache_usage_percent", capped)
            elif values is None:
                out.error("kv_cache_usage_percent", _missing(mapping.kv_usage))
            else:
                out.set_metric("kv_cache_usage_percent", sum(v / len(values) for v in values))
        if mapping.lora:
            self._lora(payload, caps, mapping.lora, out)
        if mapping.cache_info:
            self._cache_info(payload, caps, mapping, out)
        self._cache_gauge(payload, caps, mapping.cache_block_size, "cache_block_size", out)
        self._cache_gauge(payload, caps, mapping.cache_num_blocks, "cache_num_blocks", out)
        for key, spec, optional in mapping.custom:
            read_custom(payload, spec, key, optional, out)

    @staticmethod
    def _counts(
        payload: MetricSamples,
        caps: Mapping[str, str],
        specs: Sequence[MetricSpec],
        field_name: str,
        out: EndpointUpdate,
    ) -> None:
        if not specs:
            return
        capped = _capped(caps, specs) if caps else None
        if capped:
            out.error(field_name, capped)
            return
        values = _first_usable(payload, specs)
        total = math.nan if values is None else sum(values)
        if not math.isfinite(total):  # none usable, or finite series summing past 1e308
            out.error(field_name, _missing(specs))
        else:
            out.set_metric(field_name, round(total))

    @staticmethod
    def _lora(
        payload: MetricSamples,
        caps: Mapping[str, str],
        specs: Sequence[MetricSpec],
        out: EndpointUpdate,
    ) -> None:
        capped = _capped(caps, specs) if caps else None
        if capped:
            for field_name in _LORA_FIELDS:
                out.error(field_name, capped)
            return
        series = _selected(payload, specs)
        if not series:
            # No family: "no adapters", a default rather than a reading (module docstring).
            out.set_metric("active_models", (), default=True)
            out.set_metric("waiting_models", (), default=True)
            out.set_metric("max_active_models", 0, default=True)
            return
        usable = [s for s in series if not math.isnan(s.value)]
        if not usable:
            for field_name in _LORA_FIELDS:
                out.error(field_name, _missing(specs))
            return
        latest = max(usable, key=lambda s: s.value)
        for field_name, label in (
            ("active_models", "running_lora_adapters"),
            ("waiting_models", "waiting_lora_adapters"),
        ):
            text = latest.labels.get(label)
            # Counted before splitting and sorting: the store refuses longer lists anyway.
            if text and text.count(",") >= MAX_LIST_ITEMS:
                out.error(
                    field_name,
                    f"{specs[0].name}: {label} lists more than {MAX_LIST_ITEMS} adapters (cap hit)",
                )
            else:
                out.set_metric(field_name, _adapters(text))
        max_lora = _as_int(latest.labels.get("max_lora"))
        if max_lora is None:
            out.error("max_active_models", f"{specs[0].name} has no integer label max_lora")
        else:
            out.set_metric("max_active_models", max_lora)

    @staticmethod
    def _cache_info(
        payload: MetricSamples, caps: Mapping[str, str], mapping: EngineMapping, out: EndpointUpdate
    ) -> None:
        capped = _capped(caps, mapping.cache_info) if caps else None
        if capped:
            out.error("cache_block_size", capped)
            out.error("cache_num_blocks", capped)
            return
        series = _selected(payload, mapping.cache_info)
        if not series:
            return  # not exposed by this server version: not an error (module docstring)
        labels = series[0].labels
        name = mapping.cache_info[0].name
        for field_name, label in (
            ("cache_block_size", mapping.cache_block_size_label),
            ("cache_num_blocks", mapping.cache_num_blocks_label),
        ):
            value = _as_int(labels.get(label))
            if value is None:
                out.error(field_name, f"{name} has no integer label {label}")
            else:
                out.set_metric(field_name, value)

    @staticmethod
    def _cache_gauge(
        payload: MetricSamples,
        caps: Mapping[str, str],
        specs: Sequence[MetricSpec],
        field_name: str,
        out: EndpointUpdate,
    ) -> None:
        capped = _capped(caps, specs) if caps else None
        if capped:
            out.error(field_name, capped)
            return
        if not _selected(payload, specs):
            return  # absent cache geometry is not an error (module docstring)
        values = _first_usable(payload, specs)
        if values is None or not values[0].is_integer():
            out.error(field_name, _missing(specs, "integer"))
        else:
            out.set_metric(field_name, int(values[0]))


__all__ = [
    "BUILTIN_ENGINES",
    "CoreMetricsExtractor",
    "CoreMetricsParameters",
    "CustomMetricConfig",
    "EngineConfig",
    "EngineMapping",
]
