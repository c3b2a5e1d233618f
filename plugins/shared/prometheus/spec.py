"""PromQL-like series selectors as used in extractor parameters: `name{label="value",...}`.

Only exact-match (`=`) label matchers exist here: the spec picks series from
one page, it is not a query. Specs are parsed at start-up, so errors are
precise and name the position; matching per tick is a few dict lookups.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from plugins.shared.prometheus.scan import METRIC_NAME_RE

_LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_SPACE: Final = re.compile(r"\s*")
_UNESCAPE: Final = {"\\": "\\", "n": "\n", '"': '"', "'": "'"}
_ESCAPE: Final = re.compile(r'[\\"\n]')
_ESCAPED: Final = {"\\": "\\\\", '"': '\\"', "\n": "\\n"}


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A sample name plus exact label matches; `str()` gives the canonical spec text.

    >>> spec = MetricSpec.parse('nv_trt_llm_request_metrics{request_type="waiting"}')
    >>> spec.matches({"request_type": "waiting", "model": "m"})
    True
    >>> str(spec)
    'nv_trt_llm_request_metrics{request_type="waiting"}'
    """

    name: str
    #: (label, value) pairs in spec order; a series matches when it has them all.
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> MetricSpec:
        """Parse `name` or `name{label="value",...}`; raise ValueError saying what is wrong."""
        return _Parser(text).parse()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a series with `labels` is selected (`l=""` selects series without `l`)."""
        return all(labels.get(key, "") == value for key, value in self.labels)

    def __str__(self) -> str:
        if not self.labels:
            return self.name
        inner = ",".join(f'{key}="{_escape(value)}"' for key, value in self.labels)
        return f"{self.name}{{{inner}}}"


def _escape(value: str) -> str:
    return _ESCAPE.sub(lambda m: _ESCAPED[m.group(0)], value)


class _Parser:
    """A tiny recursive-descent parser; a class only to share the position."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> ValueError:
        return ValueError(f"invalid metric spec {self.text!r}: {what} at position {self.pos}")

    def skip_space(self) -> None:
        match = _SPACE.match(self.text, self.pos)
        if match:
            self.pos = match.end()

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def parse(self) -> MetricSpec:
        self.skip_space()
        if not self.text.strip():
            raise ValueError("invalid metric spec: empty")
        name = METRIC_NAME_RE.match(self.text, self.pos)
        if name is None:
            raise self.fail("expected a metric name")
        self.pos = name.end()
        self.skip_space()
        labels: list[tuple[str, str]] = []
        if self.peek() == "{":
            self.pos += 1
            labels = self.parse_matchers()
            self.skip_space()
        if self.pos != len(self.text):
            raise self.fail(f"unexpected {self.peek()!r}")
        return MetricSpec(name.group(0), tuple(labels))

    def parse_matchers(self) -> list[tuple[str, str]]:
        labels: list[tuple[str, str]] = []
        seen: set[str] = set()
        while True:
            self.skip_space()
            if self.peek() == "}":
                self.pos += 1
                return labels
            label = _LABEL_NAME.match(self.text, self.pos)
            if label is None:
                raise self.fail("expected a label name or '}'")
            key = label.group(0)
            if key in seen:
                raise self.fail(f"label {key!r} given twice")
            seen.add(key)
            self.pos = label.end()
            self.skip_space()
            operator = self.text[self.pos : self.pos + 2]
            if operator in ("!=", "=~", "!~"):
                raise self.fail(
                    f"only exact-match '=' label matchers are supported, not {operator!r}"
                )
            if self.peek() != "=":
                raise self.fail(f"expected '=' after label {key!r}")
            self.pos += 1
            self.skip_space()
            labels.append((key, self.parse_quoted()))
            self.skip_space()
            if self.peek() == ",":
                self.pos += 1
            elif self.peek() != "}":
                raise self.fail("expected ',' or '}'")

    def parse_quoted(self) -> str:
        quote = self.peek()
        if quote not in ('"', "'"):
            raise self.fail("expected a quoted label value")
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == quote:
                return "".join(chars)
            if char == "\\":
                escaped = self.peek()
                if escaped not in _UNESCAPE:
                    raise self.fail(f"unknown escape '\\{escaped}'")
                chars.append(_UNESCAPE[escaped])
                self.pos += 1
            else:
                chars.append(char)
        raise self.fail("unterminated label value")
