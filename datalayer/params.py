"""Strict decoding of YAML mappings into plugin `Parameters` dataclasses.

Plugins declare their parameters as a dataclass with snake_case fields; YAML
uses the camelCase names upstream EPP configs use (`engineLabelKey`). Decoding
is strict so a typo is an error naming the exact path, not a silently ignored
key. The declarations double as documentation (`datalayer plugins`).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin


class DecodeError(ValueError):
    """A value does not fit its declared type; `path` is dotted/indexed below the root."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class Duration(float):
    """Seconds, written in YAML as a number or a Go-style duration string (`50ms`, `1m30s`)."""


class _FilePathMark:
    """The `Annotated` mark of :data:`FilePath` fields."""


#: A local file path (or path template), declared as `path: FilePath`. Written relative, it
#: is relative to the config file's folder, not to the working directory of whoever
#: started the process: the loader resolves it with :func:`resolve_file_paths`. For type
#: checkers and decoding it is a plain `str` (callers pass strings).
FilePath = Annotated[str, _FilePathMark]


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


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


def camel_case(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def yaml_name(field: dataclasses.Field[Any]) -> str:
    """The YAML key of a dataclass field: `metadata={"yaml": ...}` or its camelCase name."""
    return str(field.metadata.get("yaml", camel_case(field.name)))


def type_name(tp: Any) -> str:
    """A reader's name for a declared type, used in error messages and `datalayer plugins`."""
    origin = get_origin(tp)
    if tp is Duration:
        return "duration"
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(tp))
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin is list:
        return f"list of {type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"map of {type_name(get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def decode(tp: Any, value: Any, path: str = "") -> Any:
    """Decode `value` into `tp`, raising DecodeError with the path of the first problem."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return decode(arg, value, path)
            except DecodeError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise DecodeError(path, f"expected {type_name(tp)}, got {_describe(value)}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise DecodeError(path, f"expected one of {type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise DecodeError(path, f"expected a list, got {_describe(value)}")
        (item_type,) = get_args(tp)
        return [decode(item_type, item, _join(path, i)) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise DecodeError(path, f"expected a mapping, got {_describe(value)}")
        _, item_type = get_args(tp)
        return {str(k): decode(item_type, v, _join(path, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return decode_dataclass(tp, value, path)
    if tp is Duration:
        if isinstance(value, bool):
            raise DecodeError(path, f"expected a duration, got {_describe(value)}")
        if isinstance(value, int | float):
            if value < 0:
                raise DecodeError(path, "a duration must not be negative")
            return Duration(value)
        if isinstance(value, str):
            try:
                return parse_duration(value)
            except ValueError as exc:
                raise DecodeError(path, str(exc)) from None
        raise DecodeError(path, f"expected a duration, got {_describe(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise DecodeError(path, f"expected true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise DecodeError(path, f"expected an integer, got {_describe(value)}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise DecodeError(path, f"expected a number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise DecodeError(path, f"expected a string, got {_describe(value)}")
    raise TypeError(f"unsupported parameter type {tp!r} at {path}")


def decode_dataclass(cls: type, value: Any, path: str = "") -> Any:
    """Build `cls` from a mapping; unknown keys and missing required fields are errors."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise DecodeError(path, f"expected a mapping, got {_describe(value)}")
    hints = typing.get_type_hints(cls)
    fields = {yaml_name(f): f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in value if k not in fields]
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise DecodeError(_join(path, str(unknown[0])), f"unknown field (known fields: {known})")
    kwargs = {}
    for key, field in fields.items():
        if key in value:
            kwargs[field.name] = decode(hints[field.name], value[key], _join(path, key))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise DecodeError(_join(path, key), "required field is missing")
    return cls(**kwargs)


def _declares_file_path(tp: Any) -> bool:
    if get_origin(tp) is Annotated:
        return _FilePathMark in get_args(tp)[1:]
    if get_origin(tp) in (Union, types.UnionType):
        return any(_declares_file_path(arg) for arg in get_args(tp))
    return False


def resolve_file_paths(params: Any, base: Path) -> Any:
    """`params` with every relative `FilePath` field made relative to `base` (a copy)."""
    if not dataclasses.is_dataclass(params) or isinstance(params, type):
        return params
    hints = typing.get_type_hints(type(params), include_extras=True)
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(params):
        value = getattr(params, field.name)
        relative = isinstance(value, str) and value and not Path(value).is_absolute()
        if relative and _declares_file_path(hints[field.name]):
            changes[field.name] = str(base / value)
    return dataclasses.replace(params, **changes) if changes else params


def describe_fields(cls: type) -> list[tuple[str, str, str]]:
    """(YAML name, type, default) of each field, for listings."""
    hints = typing.get_type_hints(cls)
    rows = []
    for field in dataclasses.fields(cls):
        if field.default is not dataclasses.MISSING:
            default = repr(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            default = repr(field.default_factory())
        else:
            default = "required"
        rows.append((yaml_name(field), type_name(hints[field.name]), default))
    return rows


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
