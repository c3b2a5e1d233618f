"""Dotted paths into a JSON value: `queue.waiting`, `engines.0.kv_cache_usage`.

Segments are split on `.`; a segment of digits indexes a list (on an object it
is an ordinary key, so `{"0": ...}` is reachable too). Parsed once at start-up
into a tuple, so a lookup is a loop of dict/list accesses.
"""

from __future__ import annotations

from typing import Any


class Absent(LookupError):
    """The path leads nowhere: a key or index is missing, or the value is null."""


class WrongShape(TypeError):
    """The path runs into a value of the wrong kind (a string where an object was needed)."""


def parse_path(text: str) -> tuple[str, ...]:
    """Split a dotted path; raise ValueError for an empty one or an empty segment."""
    if not text:
        raise ValueError("must not be empty")
    segments = tuple(text.split("."))
    if any(not s for s in segments):
        raise ValueError(f"{text!r} has an empty segment")
    return segments


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def lookup(document: Any, segments: tuple[str, ...]) -> Any:
    """The value at `segments`; raise Absent or WrongShape with the path walked so far."""
    node = document
    for depth, segment in enumerate(segments):
        if isinstance(node, dict):
            if segment not in node:
                raise Absent(f"no key {segment!r}{_at(segments, depth)}")
            node = node[segment]
        elif isinstance(node, list):
            if not segment.isdigit():
                where = _at(segments, depth)
                raise WrongShape(f"{segment!r} is not an index into the array{where}")
            index = int(segment)
            if index >= len(node):
                raise Absent(
                    f"index {index} out of range (length {len(node)}){_at(segments, depth)}"
                )
            node = node[index]
        elif node is None:
            raise Absent(f"null{_at(segments, depth)}")
        else:
            raise WrongShape(f"{_kind(node)}, not an object or array{_at(segments, depth)}")
    if node is None:
        raise Absent("null")
    return node


def _at(segments: tuple[str, ...], depth: int) -> str:
    return f" at {'.'.join(segments[:depth])!r}" if depth else ""
