"""Kubernetes label selectors: `a=b,c!=d,e in (x,y),f notin (z),g,!h`.

Schedulers already speak this syntax (InferencePool selectors, kubectl -l),
so subscriptions and List requests use it rather than an invented one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Operator = Literal["=", "!=", "in", "notin", "exists", "!"]

_KEY = re.compile(
    r"(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
)
_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_MAX_KEY = 316  # 253 (prefix) + 1 + 63 (name)
_MAX_VALUE = 63


class SelectorError(ValueError):
    """The selector text is malformed; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator == "exists":
            return value is not None
        if self.operator == "!":
            return value is None
        if self.operator in ("=", "in"):
            return value is not None and value in self.values
        # `!=` and `notin` match when the label is absent, as in Kubernetes.
        return value is None or value not in self.values


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed selector; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()
    text: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)


EVERYTHING = Selector()

#: Longest selector text accepted, in characters. Real selectors are a few hundred characters;
#: 64 KiB leaves room for generated ones (long `in (...)` sets) while bounding the work a single
#: request can ask for, whatever the transport's own limit (gRPC takes 1 MiB messages).
MAX_SELECTOR_LENGTH = 64 * 1024
#: Most requirements (comma-separated terms) in one selector: every requirement is checked
#: against every endpoint's labels on every evaluation, so their number is bounded too.
MAX_REQUIREMENTS = 256
#: Error messages quote at most this many characters of the selector, so a refused 64 KiB
#: selector does not come back whole in a gRPC status or a log line.
_QUOTE_LIMIT = 200
# `\s` on str patterns is the same predicate as str.isspace (both use Unicode whitespace).
_SPACE = re.compile(r"\s*")


def _quote(text: str) -> str:
    if len(text) <= _QUOTE_LIMIT:
        return repr(text)
    return f"{text[:_QUOTE_LIMIT]!r}... ({len(text)} characters)"


def parse_selector(text: str) -> Selector:
    """Parse selector text; raise SelectorError naming the position of the problem.

    One pass over the text: every step moves an index forward and nothing copies the rest of
    the text, so the work is linear in its length (the earlier parser sliced the remainder for
    every term, and a legal selector under 1 MiB took seconds). Text longer than
    MAX_SELECTOR_LENGTH or with more than MAX_REQUIREMENTS terms is refused up front.
    """
    if len(text) > MAX_SELECTOR_LENGTH:
        raise SelectorError(
            f"label selector {_quote(text)} is {len(text)} characters, longer than the cap of "
            f"{MAX_SELECTOR_LENGTH} characters"
        )
    parser = _Parser(text)
    return Selector(parser.parse(), text.strip())


class _Parser:
    """A recursive-descent scanner over `text` by index (`pos`); it never slices ahead."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.end = len(text)
        self.pos = 0

    def fail(self, message: str) -> SelectorError:
        return SelectorError(
            f"label selector {_quote(self.text)}, at character {self.pos}: {message}"
        )

    def skip_space(self) -> None:
        # Most calls are at a non-space: one character test is cheaper than a regex call.
        if self.pos < self.end and self.text[self.pos].isspace():
            match = _SPACE.match(self.text, self.pos)
            assert match is not None  # `\s*` always matches
            self.pos = match.end()

    def at_end(self) -> bool:
        self.skip_space()
        return self.pos >= self.end

    def take(self, literal: str) -> bool:
        self.skip_space()
        if self.text.startswith(literal, self.pos):
            self.pos += len(literal)
            return True
        return False

    def word(self, pattern: re.Pattern[str], what: str, limit: int) -> str:
        self.skip_space()
        match = pattern.match(self.text, self.pos)
        if match is None or (what == "label key" and match.end() == self.pos):
            raise self.fail(f"expected a {what}")
        if match.end() - self.pos > limit:
            raise self.fail(f"{what} {_quote(match.group())} is longer than {limit} characters")
        self.pos = match.end()
        return match.group()

    def parse(self) -> tuple[Requirement, ...]:
        requirements: list[Requirement] = []
        if self.at_end():
            return ()
        while True:
            if len(requirements) == MAX_REQUIREMENTS:
                raise self.fail(f"more than {MAX_REQUIREMENTS} requirements (the cap)")
            requirements.append(self.requirement())
            if self.at_end():
                return tuple(requirements)
            if not self.take(","):
                raise self.fail("expected ',' between requirements")

    def keyword(self, op: str) -> bool:
        """`op` at pos as a whole word (not followed by a letter or digit); consumed if so."""
        after = self.pos + len(op)
        if self.text.startswith(op, self.pos) and (
            after == self.end or not self.text[after].isalnum()
        ):
            self.pos = after
            return True
        return False

    def requirement(self) -> Requirement:
        if self.take("!"):
            return Requirement(self.word(_KEY, "label key", _MAX_KEY), "!")
        key = self.word(_KEY, "label key", _MAX_KEY)
        if self.take("=="):
            return Requirement(key, "=", frozenset({self.value()}))
        if self.take("!="):
            return Requirement(key, "!=", frozenset({self.value()}))
        if self.take("="):
            return Requirement(key, "=", frozenset({self.value()}))
        self.skip_space()
        if self.keyword("notin"):
            return Requirement(key, "notin", self.value_set())
        if self.keyword("in"):
            return Requirement(key, "in", self.value_set())
        if self.at_end() or self.text[self.pos] == ",":
            return Requirement(key, "exists")
        raise self.fail(f"expected an operator (=, ==, !=, in, notin) after {key!r}")

    def value(self) -> str:
        return self.word(_VALUE, "label value", _MAX_VALUE)

    def value_set(self) -> frozenset[str]:
        if not self.take("("):
            raise self.fail("expected '(' to open a value set")
        values = {self.value()}
        while self.take(","):
            values.add(self.value())
        if not self.take(")"):
            raise self.fail("expected ')' to close the value set")
        return frozenset(values)
