"""`JsonDocument`: the payload type of every source that hands extractors parsed JSON.

A wrapper class, not a `dict` subclass, on purpose: the wiring check compares
payload types with `issubclass`, and `MetricSamples` is a `dict`, so a dict-based
JSON type would let a JSON extractor be wired under a Prometheus source (or the
reverse) and fail on every tick instead of at start-up. A document may also be
a list or a scalar, which a dict subclass could not hold.
"""

from __future__ import annotations

import json
from typing import Any


class PayloadError(ValueError):
    """A body could not be decoded into the configured payload type."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class JsonDocument:
    """One parsed JSON value (object, array or scalar) as read from an endpoint."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    @classmethod
    def parse(cls, body: bytes | str) -> JsonDocument:
        """Parse strict JSON (no NaN/Infinity literals); raise PayloadError naming the fault."""
        try:
            return cls(json.loads(body, parse_constant=_reject_constant))
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise PayloadError(f"not JSON: {exc}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonDocument) and self.value == other.value

    __hash__ = None  # type: ignore[assignment]  # mutable content, like the dict it wraps

    def __repr__(self) -> str:
        return f"JsonDocument({self.value!r:.200})"
