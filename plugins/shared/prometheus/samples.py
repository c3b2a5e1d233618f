"""The payload of Prometheus sources: the samples of the wanted names, nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, NamedTuple


class Sample(NamedTuple):
    """One series line: its labels and value (the optional timestamp is dropped)."""

    labels: dict[str, str]
    value: float


_NO_CAPS: Final[Mapping[str, str]] = MappingProxyType({})


class MetricSamples(dict[str, list[Sample]]):
    """Samples keyed by the exact sample name on the line (`vllm:prompt_tokens_total`).

    A real class rather than an alias because sources and extractors declare it
    as their payload type and the wiring check compares types. A wanted name
    with no line on the page has no key, so "family absent" is `name not in`.
    Samples keep page order.

    `caps` names the wanted names whose lines hit one of the scanner's per-scan
    caps (too many series, a line or label value too long): what is kept for such
    a name is incomplete, so an extractor reports the field as an error naming the
    cap rather than a partial sum or an "absent family" default.
    """

    # No __init__: the scanner builds one per page, and only a hostile page needs `_caps`.
    __slots__ = ("_caps",)
    _caps: dict[str, str]

    @property
    def caps(self) -> Mapping[str, str]:
        """Wanted name -> which cap its lines hit on this page (empty on a normal page)."""
        # getattr with a default, not try/except: the miss is the normal case, and a
        # Python-level exception costs ~3x as much (extractors read this every tick).
        return getattr(self, "_caps", _NO_CAPS)

    def note_cap(self, name: str, note: str) -> None:
        """Record that `name` hit a cap; the first note per name is kept."""
        try:
            caps = self._caps
        except AttributeError:
            caps = self._caps = {}
        caps.setdefault(name, note)
