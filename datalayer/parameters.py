"""Typed plugin parameters: one msgspec `Struct` per plugin type, decoded strictly.

A plugin declares its `parameters:` as a subclass of :class:`Parameters` with snake_case
fields; YAML uses the camelCase names upstream EPP configs use (`engineLabelKey`). Unknown
keys are errors, bounds are constraints on the field types (`msgspec.Meta`), and a check
across fields lives in `__post_init__`, raising :class:`ParameterError` with the field's
name. :func:`decode` turns a problem into a `ParameterError` whose `field` is the dotted
path of the bad value (`engineConfigs[0].name`) and whose message says what is wrong in
the config's words (`unknown field (known fields: ...)`, `must be 1..65535, got 70000`).
The model is also the documentation: :func:`json_schema` for `datalayer plugins --json`,
:func:`describe` for the listing.

    class Params(Parameters):
        port: Annotated[int, Meta(ge=1, le=65535)] = 8000
        path: Annotated[str, Meta(pattern="^/", extra={"error": "must start with '/'"})] = "/"
        interval: Duration = 0.05             # `interval: 50ms` in YAML
        ca_file: FilePath | None = None       # relative: next to the config file

    decode(Params, {"port": 70000}, "parameters")   # ParameterError: parameters.port: ...
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import msgspec


class ParameterError(ValueError):
    """A plugin parameter is invalid; `field` is its dotted path below `parameters`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class Parameters(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Base of every plugin's parameter model: camelCase keys, unknown keys refused.

    Give a key another YAML name with `msgspec.field(name="peersDNS")`; a mutable default
    with `msgspec.field(default_factory=list)` (an empty `[]` or `{}` works as is). Fields
    are positional in declaration order; a subclass adding a required field after defaulted
    ones declares `class P(Base, kw_only=True)`.
    """


if TYPE_CHECKING:
    #: Seconds; to a type checker a plain float, so defaults are written `= 0.05`.
    Duration = float
else:

    class Duration(float):
        """Seconds, written in YAML as a number or a Go-style duration string (`50ms`, `1m30s`).

        Write defaults as plain numbers (`= 0.05`): the JSON Schema encodes them as numbers.
        """

    class PositiveDuration(Duration):
        """A :class:`Duration` that must be greater than zero (a tick, a timeout)."""


if TYPE_CHECKING:
    PositiveDuration = float

#: Common bounds, as constraints a schema shows (`datalayer plugins`).
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
#: An HTTP path: starts with `/`. (A constraint's `extra={"error": ...}` is the message when it
#: is broken: `must start with '/', got 'metrics'`, or where `{value!r}` says, if it does.)
UrlPath = Annotated[str, msgspec.Meta(pattern="^/", extra={"error": "must start with '/'"})]


class _FilePathMark:
    """The `Annotated` mark of :data:`FilePath` fields."""

    def __repr__(self) -> str:
        return "FilePath"


_FILE_PATH = _FilePathMark()

#: A local file path (or path template). Written relative, it is relative to the config
#: file's folder, not to the working directory of whoever started the process: :func:`decode`
#: resolves it when given `base_dir`. For type checkers and callers it is a plain `str`.
FilePath = Annotated[
    str,
    msgspec.Meta(extra_json_schema={"format": "path", "description": "relative to the config"}),
    _FILE_PATH,
]

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PATTERN = r"^((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$"


def parse_duration(text: str) -> Duration:
    """Parse `1s`, `250ms`, `1m30s` (Go's time.ParseDuration units); raise ValueError."""
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(s):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f"{text!r} is not a duration (examples: 50ms, 1s, 1m30s)")
    return Duration(total)


def _dec_hook(tp: Any, value: Any) -> Any:
    if tp is Duration or tp is PositiveDuration:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if value < 0:
                raise ValueError("a duration must not be negative")
            seconds = Duration(value)
        elif isinstance(value, str):
            seconds = parse_duration(value)
        else:
            raise ValueError(f"expected a duration, got {_describe(value)}")
        if tp is PositiveDuration and seconds <= 0:
            raise ValueError("must be greater than zero")
        return tp(seconds)  # msgspec checks the hook returned an instance of `tp`
    raise NotImplementedError(f"unsupported parameter type {tp!r}")


_T = TypeVar("_T")


def decode(tp: type[_T], value: Any, path: str = "", base_dir: Path | None = None) -> _T:
    """Decode `value` (a YAML mapping; None = `{}`) into `tp`; ParameterError on a problem.

    The error's `field` is `path` joined with the bad value's place. With `base_dir`,
    relative :data:`FilePath` values are resolved against it.
    """
    if value is None and _is_struct(tp):
        value = {}
    try:
        result = msgspec.convert(value, tp, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise _explain(exc, tp, value, path) from None
    if base_dir is not None:
        result = resolve_file_paths(result, base_dir)
    return result


def check(params: Any) -> None:
    """Validate a model built in code (constructors do not check bounds): ParameterError,
    with the field's path, for what :func:`decode` would refuse."""
    if isinstance(params, Parameters):
        decode(type(params), msgspec.to_builtins(params, enc_hook=_enc_hook))


def _enc_hook(value: Any) -> Any:
    if isinstance(value, float):
        return float(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def resolve_file_paths(params: _T, base: Path) -> _T:
    """`params` with every relative `FilePath` value (nested models too) made relative to
    `base`; a copy when anything changed."""
    if not isinstance(params, msgspec.Struct):
        return params
    hints = typing.get_type_hints(type(params), include_extras=True)
    changes: dict[str, Any] = {}
    for name in params.__struct_fields__:
        value = getattr(params, name)
        if isinstance(value, str) and value and _declares_file_path(hints[name]):
            if not Path(value).is_absolute():
                changes[name] = str(base / value)
        elif isinstance(value, msgspec.Struct):
            changes[name] = resolve_file_paths(value, base)
        elif isinstance(value, list) and any(isinstance(v, msgspec.Struct) for v in value):
            changes[name] = [resolve_file_paths(v, base) for v in value]
    return msgspec.structs.replace(params, **changes) if changes else params


def json_schema(tp: Any) -> dict[str, Any]:
    """The JSON Schema of a parameter model (durations: a number of seconds or a string)."""
    return msgspec.json.schema(tp, schema_hook=_schema_hook)


Row = tuple[str, str, str, str]


def describe(tp: Any) -> list[Row]:
    """(YAML name, type, default, bounds) of each field of a model, read from its schema."""
    schema = json_schema(tp)
    return _rows(_deref(schema, schema.get("$defs", {})))


def describe_nested(tp: Any) -> list[tuple[str, list[Row]]]:
    """The models a model's fields use (`EngineConfig` of `engineConfigs`), with their rows."""
    schema = json_schema(tp)
    root = str(schema.get("$ref", "")).rsplit("/", 1)[-1]
    return [(name, _rows(d)) for name, d in schema.get("$defs", {}).items() if name != root]


def render(tp: Any, indent: str = "    ") -> list[str]:
    """`name: type = default  (bounds)` lines for a model and the models it uses."""
    lines = [_render_row(row, indent) for row in describe(tp)]
    for name, rows in describe_nested(tp):
        lines.append(f"{indent}{name}:")
        lines += [_render_row(row, indent * 2) for row in rows]
    return lines


def _render_row(row: Row, indent: str) -> str:
    name, type_text, default, bounds = row
    return f"{indent}{name}: {type_text} = {default}" + (f"  ({bounds})" if bounds else "")


def _rows(definition: dict[str, Any]) -> list[Row]:
    rows = []
    required = set(definition.get("required", ()))
    for name, prop in definition.get("properties", {}).items():
        default = "required" if name in required else _default_text(prop)
        rows.append((name, _schema_type(prop), default, _bounds(prop)))
    return rows


# --- errors: msgspec's message and location, in the config's words ---

_LOCATION = re.compile(r"^(?P<message>.*?)(?: - at `(?:(?P<key>key) in )?(?P<where>\$[^`]*)`)?$")
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_NOT_FOUND = object()


def _explain(exc: msgspec.ValidationError, tp: Any, value: Any, path: str) -> ParameterError:
    cause = exc.__cause__
    match = _LOCATION.match(str(exc))
    assert match is not None  # the pattern matches any text
    message, where = match["message"], match["where"] or "$"
    steps: list[str | int] = []
    for name, index in _SEGMENT.findall(where[1:]):
        steps.append(name or (int(index) if index != "..." else "..."))
    declared, found = tp, value
    for i, step in enumerate(steps):
        if step == "...":  # msgspec does not name the key of a bad map value: find it
            step = _bad_key(_item_type(declared, "..."), found)
            steps[i] = step
        declared, found = _item_type(declared, step), _item(found, step)
    if isinstance(cause, ParameterError):
        return ParameterError(_join(_join_all(path, steps), cause.field), cause.message)
    if isinstance(cause, ValueError | TypeError):
        return ParameterError(_join_all(path, steps), str(cause))
    if match["key"]:
        return ParameterError(_join_all(path, steps), f"keys must be strings: {message}")
    unknown = re.fullmatch(r"Object contains unknown field `(.+)`", message)
    if unknown:
        known = ", ".join(sorted(_field_types(declared))) or "none"
        field = _join_all(path, [*steps, unknown[1]])
        return ParameterError(field, f"unknown field (known fields: {known})")
    missing = re.fullmatch(r"Object missing required field `(.+)`", message)
    if missing:
        return ParameterError(_join_all(path, [*steps, missing[1]]), "required field is missing")
    where_text = _join_all(path, steps)
    if message.startswith("Invalid enum value") or (
        message.startswith("Expected") and ", got `" not in message
    ):
        return ParameterError(where_text, _broken_constraint(declared, found))
    return ParameterError(where_text, f"expected {_expected(declared)}, got {_describe(found)}")


def _broken_constraint(declared: Any, found: Any) -> str:
    """Why `found` breaks a bound of `declared` (a Literal, or a Meta constraint)."""
    inner, meta = _unwrap(declared)
    if get_origin(inner) is Literal:
        return f"expected one of {' | '.join(repr(a) for a in get_args(inner))}, got {found!r}"
    if meta is None:
        return f"invalid value {found!r}"
    if meta.extra and "error" in meta.extra:  # the model's own words; `{value}`: the value
        error = str(meta.extra["error"])
        return error.format(value=found) if "{value" in error else f"{error}, got {found!r}"
    if meta.ge is not None and meta.le is not None:
        return f"must be {meta.ge}..{meta.le}, got {found!r}"
    if meta.gt == 0 and meta.lt is None and meta.le is None:
        return "must be greater than zero"
    if meta.min_length == 1 and meta.max_length is None:
        return "must not be empty"
    bounds = _meta_bounds(meta)
    return f"must be {bounds}, got {found!r}" if bounds else f"invalid value {found!r}"


def _constrains(meta: msgspec.Meta) -> bool:
    return bool(meta.extra) or any(
        getattr(meta, name) is not None
        for name in ("ge", "gt", "le", "lt", "min_length", "max_length", "pattern")
    )


def _meta_bounds(meta: msgspec.Meta) -> str:
    parts = []
    for op, bound in ((">=", meta.ge), (">", meta.gt), ("<=", meta.le), ("<", meta.lt)):
        if bound is not None:
            parts.append(f"{op} {bound}")
    if meta.min_length is not None:
        parts.append(f"at least {meta.min_length} long")
    if meta.max_length is not None:
        parts.append(f"at most {meta.max_length} long")
    if meta.pattern is not None:
        parts.append(f"matching {meta.pattern!r}")
    return " and ".join(parts)


def _unwrap(tp: Any) -> tuple[Any, msgspec.Meta | None]:
    """The type below `Annotated` and `| None`, and the constraint `Meta` on it if any."""
    meta = None
    while True:
        if get_origin(tp) is Annotated:
            tp, *extras = get_args(tp)
            for m in extras:  # the innermost constraint wins, as in msgspec
                if isinstance(m, msgspec.Meta) and _constrains(m):
                    meta = m if meta is None else meta
            continue
        if get_origin(tp) in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp, meta


def _field_types(tp: Any) -> dict[str, Any]:
    """YAML name -> declared type of a model's fields ({} for anything else)."""
    tp, _ = _unwrap(tp)
    if not _is_struct(tp):
        members = [a for a in get_args(tp) if _is_struct(_unwrap(a)[0])]
        if not members:
            return {}
        tp = _unwrap(members[0])[0]
    hints = typing.get_type_hints(tp, include_extras=True)
    return {f.encode_name: hints[f.name] for f in msgspec.structs.fields(tp)}


def _item_type(tp: Any, step: str | int) -> Any:
    """The declared type one step below `tp` (a field, a list item, a map value)."""
    if isinstance(step, str):
        fields = _field_types(tp)
        if fields:
            return fields.get(step, Any)
    inner, _ = _unwrap(tp)
    candidates = get_args(inner) if get_origin(inner) in (Union, types.UnionType) else (inner,)
    for candidate in candidates:
        candidate, _ = _unwrap(candidate)
        origin = get_origin(candidate)
        if isinstance(step, int) and origin is list:
            return get_args(candidate)[0]
        if isinstance(step, str) and origin is dict:
            return get_args(candidate)[1]
    return Any


def _item(value: Any, step: str | int) -> Any:
    if isinstance(step, int) and isinstance(value, list) and step < len(value):
        return value[step]
    if isinstance(step, str) and isinstance(value, dict):
        return value.get(step, _NOT_FOUND)
    return _NOT_FOUND


def _bad_key(item_type: Any, value: Any) -> str:
    for key, item in value.items() if isinstance(value, dict) else ():
        try:
            msgspec.convert(item, item_type, dec_hook=_dec_hook)
        except msgspec.ValidationError:
            return str(key)
    return "..."


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not key:
        return path
    if key.startswith("["):
        return path + key
    return f"{path}.{key}" if path else key


def _join_all(path: str, steps: list[str | int]) -> str:
    for step in steps:
        path = _join(path, step)
    return path


def _expected(tp: Any) -> str:
    """`an integer`, `a list`, `a duration or null`: what a declared type accepts."""
    inner, _ = _unwrap(tp)
    if get_origin(tp) in (Union, types.UnionType) or get_origin(inner) in (Union, types.UnionType):
        args = get_args(inner) if get_origin(inner) in (Union, types.UnionType) else get_args(tp)
        return " or ".join(_expected(a) for a in args)
    if get_origin(inner) is Literal:
        return "one of " + " | ".join(repr(a) for a in get_args(inner))
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        Duration: "a duration",
        PositiveDuration: "a duration",
        type(None): "null",
        list: "a list",
        dict: "a mapping",
    }
    origin = get_origin(inner) or inner
    if origin in names:
        return names[origin]
    if _is_struct(inner):
        return "a mapping"
    return getattr(inner, "__name__", str(inner))


def _describe(value: Any) -> str:
    if value is _NOT_FOUND or value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _declares_file_path(tp: Any) -> bool:
    if get_origin(tp) is Annotated:
        return any(m is _FILE_PATH for m in get_args(tp)[1:])
    if get_origin(tp) in (Union, types.UnionType):
        return any(_declares_file_path(arg) for arg in get_args(tp))
    return False


# --- JSON Schema and its rendering ---


def _schema_hook(tp: Any) -> dict[str, Any]:
    if tp is Duration or tp is PositiveDuration:
        number = {"type": "number", "minimum": 0}
        if tp is PositiveDuration:
            number = {"type": "number", "exclusiveMinimum": 0}
        return {
            "title": "Duration",
            "description": "seconds, or a duration string: 50ms, 1s, 1m30s",
            "anyOf": [number, {"type": "string", "pattern": _DURATION_PATTERN}],
        }
    raise NotImplementedError(f"no JSON Schema for {tp!r}")


def _deref(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return dict(defs.get(ref.removeprefix("#/$defs/"), {}))
    return schema


def _schema_type(prop: dict[str, Any]) -> str:
    """A reader's name for a schema: `int`, `duration | null`, `list of EngineConfig`."""
    if prop.get("title") == "Duration":
        return "duration"
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in prop:
        return " | ".join(_schema_type(p) for p in prop["anyOf"])
    if "enum" in prop:
        return " | ".join(repr(v) for v in prop["enum"])
    kind = prop.get("type")
    if kind == "array":
        return f"list of {_schema_type(prop.get('items', {}))}"
    if kind == "object":
        values = prop.get("additionalProperties")
        return f"map of {_schema_type(values)}" if isinstance(values, dict) else "mapping"
    if prop.get("format") == "path":
        return "path"
    names = {"integer": "int", "number": "float", "string": "str", "boolean": "bool"}
    return names.get(str(kind), str(kind) if kind else "any")


def _bounds(prop: dict[str, Any]) -> str:
    """`1..65535`, `> 0`, `non-empty`, `matches ^/`: the constraints a schema states."""
    parts: list[str] = []
    nested = (
        [] if prop.get("title") == "Duration" else [*prop.get("anyOf", ()), prop.get("items", {})]
    )
    for sub in [prop, *nested]:
        if sub.get("title") == "Duration":
            if "exclusiveMinimum" in sub["anyOf"][0]:
                parts.append("> 0")
            continue
        prefix = "items " if sub is prop.get("items") else ""
        low, high = sub.get("minimum"), sub.get("maximum")
        if low is not None and high is not None:
            parts.append(f"{prefix}{low}..{high}")
        elif low is not None:
            parts.append(f"{prefix}>= {low}")
        elif high is not None:
            parts.append(f"{prefix}<= {high}")
        if "exclusiveMinimum" in sub:
            parts.append(f"{prefix}> {sub['exclusiveMinimum']}")
        if "exclusiveMaximum" in sub:
            parts.append(f"{prefix}< {sub['exclusiveMaximum']}")
        for key in ("minLength", "minItems"):
            if sub.get(key) == 1:
                parts.append(f"{prefix}non-empty")
            elif key in sub:
                parts.append(f"{prefix}at least {sub[key]}")
        if "pattern" in sub:
            parts.append(f"{prefix}matches {sub['pattern']}")
    return ", ".join(dict.fromkeys(parts))


def _default_text(prop: dict[str, Any]) -> str:
    if "default" not in prop:
        return "(computed)"
    default = prop["default"]
    if default is None:
        return "None"
    if isinstance(default, str):
        return repr(default)
    return msgspec.json.encode(default).decode()
