"""`json-extractor`: numbers at dotted paths of a JSON payload into `metrics.custom`.

The JSON counterpart of `prometheus-metric`: any load signal a server or a
sidecar reports as JSON becomes schedulable without code, by naming its path
in the YAML. Takes `JsonDocument`, so the config loader refuses it under a
Prometheus source (and a Prometheus extractor under a JSON source).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated

import msgspec

from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import NonEmptyStr, Parameters
from datalayer.plugin import Extractor, ParameterError
from plugins.extractors.json.paths import Absent, WrongShape, lookup, parse_path
from plugins.shared.payloads import JsonDocument


class JsonFieldParameters(Parameters):
    #: Dotted path into the document; digit segments index arrays (`engines.0.waiting`).
    path: str
    #: The key in `metrics.custom`; defaults to the path.
    key: NonEmptyStr | None = None
    #: When true, an absent value (missing key or index, or null) is not an error.
    optional: bool = False


class JsonExtractorParameters(Parameters):
    fields: Annotated[
        list[JsonFieldParameters],
        msgspec.Meta(min_length=1, extra={"error": "name at least one field"}),
    ]


@dataclass(frozen=True, slots=True)
class _Field:
    segments: tuple[str, ...]
    key: str
    optional: bool
    path: str


class JsonExtractor(Extractor):
    type_name = "json-extractor"
    description = "numbers at dotted paths of a JSON payload into metrics.custom"
    Parameters = JsonExtractorParameters
    input_type = JsonDocument

    def __init__(self, name: str, params: JsonExtractorParameters) -> None:
        super().__init__(name, params)
        self.fields: list[_Field] = []
        keys: set[str] = set()
        for i, spec in enumerate(params.fields):
            try:
                segments = parse_path(spec.path)
            except ValueError as exc:
                raise ParameterError(f"fields[{i}].path", str(exc)) from None
            key = spec.key if spec.key is not None else spec.path
            if not key:
                raise ParameterError(f"fields[{i}].key", "must not be empty")
            if key in keys:
                raise ParameterError(f"fields[{i}].key", f"duplicate key {key!r}")
            keys.add(key)
            self.fields.append(_Field(segments, key, spec.optional, spec.path))

    def extract(self, payload: JsonDocument, endpoint: EndpointSpec, out: EndpointUpdate) -> None:
        """Booleans count as 1/0 (a `ready` flag is a useful signal); strings are not parsed."""
        for field in self.fields:
            try:
                value = lookup(payload.value, field.segments)
            except Absent as exc:
                if not field.optional:
                    out.error(f"custom[{field.key}]", f"{field.path}: {exc}")
                continue
            except WrongShape as exc:
                out.error(f"custom[{field.key}]", f"{field.path}: {exc}")
                continue
            number = _as_number(value)
            if isinstance(number, float):
                out.set_custom(field.key, number)
            else:
                out.error(f"custom[{field.key}]", f"{field.path}: {number}")


def _as_number(value: object) -> float | str:
    """The value as a finite float, or why it is not one."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # a JSON integer beyond float range
            number = math.inf
        return number if math.isfinite(number) else f"{value!r:.40} is not a finite number"
    names: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}
    return f"{names.get(type(value), type(value).__name__)}, not a number"
