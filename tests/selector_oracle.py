"""The selector parser as it was before it was made linear: the reference for the new one.

Copied verbatim from datalayer/selector.py at commit 84cdd8f (only the dataclasses are
imported from the real module, so results compare with ==). It slices the rest of the text
for every term that is not `=`/`==`/`!=`, which is quadratic; tests/test_selector.py checks
the new parser gives the same results, and bench/selector.py times both.
"""

from __future__ import annotations

import re

from datalayer.selector import Requirement, Selector, SelectorError

_KEY = re.compile(
    r"(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
)
_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
_MAX_KEY = 316  # 253 (prefix) + 1 + 63 (name)
_MAX_VALUE = 63


def old_parse_selector(text: str) -> Selector:
    """Parse selector text; raise SelectorError naming the position of the problem."""
    parser = _Parser(text)
    return Selector(parser.parse(), text.strip())


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> SelectorError:
        return SelectorError(f"label selector {self.text!r}, at character {self.pos}: {message}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_space()
        return self.pos >= len(self.text)

    def take(self, literal: str) -> bool:
        self.skip_space()
        if self.text.startswith(literal, self.pos):
            self.pos += len(literal)
            return True
        return False

    def word(self, pattern: re.Pattern[str], what: str, limit: int) -> str:
        self.skip_space()
        match = pattern.match(self.text, self.pos)
        if match is None or (what == "label key" and not match.group()):
            raise self.fail(f"expected a {what}")
        value = match.group()
        if len(value) > limit:
            raise self.fail(f"{what} {value!r} is longer than {limit} characters")
        self.pos = match.end()
        return value

    def parse(self) -> tuple[Requirement, ...]:
        requirements: list[Requirement] = []
        if self.at_end():
            return ()
        while True:
            requirements.append(self.requirement())
            if self.at_end():
                return tuple(requirements)
            if not self.take(","):
                raise self.fail("expected ',' between requirements")

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
        rest = self.text[self.pos :]
        for op in ("notin", "in"):
            if rest.startswith(op) and (len(rest) == len(op) or not rest[len(op)].isalnum()):
                self.pos += len(op)
                return Requirement(key, op, self.value_set())
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
