"""Prometheus text format 0.0.4, byte for byte as ``prometheus_client.generate_latest`` writes it.

A benchmark scrapes 100 mock pods 20 times a second from one process, so a page must cost next
to nothing to serve. Each metric family therefore keeps its rendered text and re-renders only
when one of its series changed; a series keeps its own rendered lines too, so one observation
re-renders one series, not the family. A :class:`Page` joins the cached chunks.

Layout rules copied from prometheus_client (so extractors meet what a real vLLM pod sends):

* labels sorted by name, so ``le`` sits between ``engine`` and ``model_name``;
* values through Go-style float formatting (``1.0``, ``1.7e+09``, ``+Inf``);
* a counter is TYPE'd with its ``_total`` name; counters, histograms and summaries are followed
  by a separate ``<name>_created`` gauge family;
* in multiprocess mode (SGLang, vLLM with several API servers) a histogram's ``_sum`` comes
  before its buckets, ``_count`` after them, and there is no ``_created``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Hashable, Iterable, Mapping, Sequence

__all__ = [
    "CONTENT_TYPE",
    "CounterFamily",
    "Family",
    "GaugeFamily",
    "HistogramFamily",
    "Page",
    "SummaryFamily",
    "format_value",
    "label_block",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_INF = math.inf


def format_value(value: float) -> str:
    """Format like prometheus_client's ``floatToGoString``, which is untyped and re-floats."""
    if value == _INF:
        return "+Inf"
    if value == -_INF:
        return "-Inf"
    if value != value:
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    # Go switches to exponent notation sooner than Python does.
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _format_count(count: int) -> str:
    """``format_value`` for an integer count, without the float round trip below 10**6."""
    if 0 <= count < 1_000_000:
        return f"{count}.0"
    return format_value(count)


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def label_block(labels: Mapping[str, str]) -> str:
    """``{a="1",b="2"}`` with names sorted, or the empty string for no labels."""
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _header(name: str, help_text: str, kind: str) -> str:
    return f"# HELP {name} {_escape_help(help_text)}\n# TYPE {name} {kind}\n"


class Family(ABC):
    """One metric family: cached text, re-rendered only after a change."""

    def __init__(self) -> None:
        self._cache: bytes | None = None
        self._pages: list[Page] = []

    def chunk(self) -> bytes:
        """The family's lines, rendered at most once per change."""
        if self._cache is None:
            self._cache = self._render().encode()
        return self._cache

    def _changed(self) -> None:
        self._cache = None
        for page in self._pages:
            page.invalidate()

    @abstractmethod
    def _render(self) -> str:
        """The family's full text."""


class _Scalar:
    """A series with one sample line; the line prefix is formatted once."""

    __slots__ = ("created", "prefix", "value")

    def __init__(self, prefix: str, value: float, created: float | None) -> None:
        self.prefix = prefix
        self.value = value
        self.created = created


class GaugeFamily(Family):
    """A gauge; series are addressed by a caller's key and kept in the order added."""

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__()
        self.name = name
        self._head = _header(name, help_text, "gauge")
        self._series: dict[Hashable, _Scalar] = {}

    def add(self, key: Hashable, labels: Mapping[str, str], value: float = 0.0) -> None:
        """Start a series (a no-op when the key exists, like ``labels()`` on a child)."""
        if key not in self._series:
            self._series[key] = _Scalar(f"{self.name}{label_block(labels)} ", value, None)
            self._changed()

    def set(self, key: Hashable, value: float) -> None:
        series = self._series[key]
        # NaN never equals itself: without the second test every NaN set would re-render.
        if series.value != value and not (value != value and series.value != series.value):
            series.value = value
            self._changed()

    def has(self, key: Hashable) -> bool:
        return key in self._series

    def get(self, key: Hashable) -> float:
        return self._series[key].value

    def _render(self) -> str:
        lines = [f"{s.prefix}{format_value(s.value)}\n" for s in self._series.values()]
        return self._head + "".join(lines)


class CounterFamily(Family):
    """A counter: ``<name>_total`` samples, then a ``<name>_created`` gauge family."""

    def __init__(self, name: str, help_text: str, *, created: bool = True) -> None:
        super().__init__()
        self.name = name
        self._with_created = created
        self._head = _header(f"{name}_total", help_text, "counter")
        self._created_head = _header(f"{name}_created", help_text, "gauge")
        self._series: dict[Hashable, _Scalar] = {}
        self._created_text: str | None = None

    def add(
        self, key: Hashable, labels: Mapping[str, str], created: float, value: float = 0.0
    ) -> None:
        if key not in self._series:
            block = label_block(labels)
            self._series[key] = _Scalar(block, value, created)
            self._created_text = None
            self._changed()

    def inc(self, key: Hashable, amount: float = 1.0) -> None:
        if amount:
            self._series[key].value += amount
            self._changed()

    def has(self, key: Hashable) -> bool:
        return key in self._series

    def get(self, key: Hashable) -> float:
        return self._series[key].value

    def _render(self) -> str:
        total = f"{self.name}_total"
        parts = [self._head]
        parts.extend(f"{total}{s.prefix} {format_value(s.value)}\n" for s in self._series.values())
        if self._with_created and self._series:
            if self._created_text is None:
                self._created_text = _created_block(self.name, self._series.values())
            parts.append(self._created_head)
            parts.append(self._created_text)
        return "".join(parts)


def _created_block(name: str, series: Iterable[_Scalar | _HistogramSeries]) -> str:
    created = f"{name}_created"
    return "".join(f"{created}{s.prefix} {format_value(s.created or 0.0)}\n" for s in series)


class _HistogramSeries:
    """Cumulative bucket counts of one label set, with its rendered bucket lines.

    An observation dirties only the buckets from its own upwards; lines below stay cached.
    """

    __slots__ = (
        "bucket_prefixes",
        "count_prefix",
        "created",
        "cumulative",
        "dirty_from",
        "lines",
        "prefix",
        "sum",
        "text",
    )

    def __init__(self, prefix: str, bucket_prefixes: list[str], count_prefix: str) -> None:
        self.prefix = prefix  # the label block without ``le``, for _created
        self.bucket_prefixes = bucket_prefixes
        self.count_prefix = count_prefix
        self.cumulative = [0] * len(bucket_prefixes)  # last is +Inf, i.e. the count
        self.lines = [""] * len(bucket_prefixes)
        self.dirty_from = 0
        self.sum = 0.0
        self.created: float | None = None
        self.text: str | None = None


class HistogramFamily(Family):
    """A histogram with fixed bucket bounds; ``+Inf`` is added as prometheus_client does."""

    def __init__(
        self,
        name: str,
        help_text: str,
        bounds: Sequence[float],
        *,
        multiprocess: bool = False,
    ) -> None:
        super().__init__()
        self.name = name
        self.bounds = [float(b) for b in bounds]
        if self.bounds != sorted(self.bounds):
            raise ValueError(f"{name}: bucket bounds must be sorted")
        self._le = [format_value(b) for b in self.bounds] + ["+Inf"]
        self._multiprocess = multiprocess
        self._head = _header(name, help_text, "histogram")
        self._created_head = _header(f"{name}_created", help_text, "gauge")
        self._series: dict[Hashable, _HistogramSeries] = {}
        self._created_text: str | None = None

    def add(self, key: Hashable, labels: Mapping[str, str], created: float) -> None:
        if key in self._series:
            return
        buckets = [f"{self.name}_bucket{label_block({**labels, 'le': le})} " for le in self._le]
        block = label_block(labels)
        series = _HistogramSeries(block, buckets, f"{self.name}_count{block} ")
        series.created = created
        self._series[key] = series
        self._created_text = None
        self._changed()

    def observe(self, key: Hashable, value: float) -> None:
        series = self._series[key]
        # First bucket whose bound is >= value: ``le`` is inclusive.
        index = bisect_left(self.bounds, value)
        cumulative = series.cumulative
        for i in range(index, len(cumulative)):
            cumulative[i] += 1
        series.sum += value
        series.dirty_from = min(series.dirty_from, index)
        series.text = None
        self._changed()

    def snapshot(self, key: Hashable) -> tuple[list[int], float]:
        """Cumulative bucket counts (``+Inf`` last) and the sum, for tests and reports."""
        series = self._series[key]
        return list(series.cumulative), series.sum

    def _series_text(self, series: _HistogramSeries) -> str:
        if series.text is not None:
            return series.text
        lines, prefixes, cumulative = series.lines, series.bucket_prefixes, series.cumulative
        for i in range(series.dirty_from, len(lines)):
            lines[i] = f"{prefixes[i]}{_format_count(cumulative[i])}\n"
        series.dirty_from = len(lines)
        sum_line = f"{self.name}_sum{series.prefix} {format_value(series.sum)}\n"
        count_line = f"{series.count_prefix}{_format_count(cumulative[-1])}\n"
        if self._multiprocess:
            text = sum_line + "".join(lines) + count_line
        else:
            text = "".join(lines) + count_line + sum_line
        series.text = text
        return text

    def _render(self) -> str:
        parts = [self._head]
        parts.extend(self._series_text(s) for s in self._series.values())
        if not self._multiprocess and self._series:
            if self._created_text is None:
                self._created_text = _created_block(self.name, self._series.values())
            parts.append(self._created_head)
            parts.append(self._created_text)
        return "".join(parts)


class SummaryFamily(Family):
    """A summary without quantiles (``_count``, ``_sum``), as HTTP instrumentation exports."""

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__()
        self.name = name
        self._head = _header(name, help_text, "summary")
        self._created_head = _header(f"{name}_created", help_text, "gauge")
        self._series: dict[Hashable, _Scalar] = {}
        self._counts: dict[Hashable, int] = {}
        self._created_text: str | None = None

    def add(self, key: Hashable, labels: Mapping[str, str], created: float) -> None:
        if key not in self._series:
            self._series[key] = _Scalar(label_block(labels), 0.0, created)
            self._counts[key] = 0
            self._created_text = None
            self._changed()

    def observe(self, key: Hashable, value: float) -> None:
        self._series[key].value += value
        self._counts[key] += 1
        self._changed()

    def _render(self) -> str:
        parts = [self._head]
        for key, s in self._series.items():
            parts.append(f"{self.name}_count{s.prefix} {format_value(self._counts[key])}\n")
            parts.append(f"{self.name}_sum{s.prefix} {format_value(s.value)}\n")
        if self._series:
            if self._created_text is None:
                self._created_text = _created_block(self.name, self._series.values())
            parts.append(self._created_head)
            parts.append(self._created_text)
        return "".join(parts)


class Page:
    """A ``/metrics`` page: families in registration order, joined from their caches.

    The joined page is cached too, so scraping an idle pod costs one attribute read.
    """

    def __init__(self, families: Iterable[Family] = ()) -> None:
        self._families: list[Family] = []
        self._cache: bytes | None = None
        for family in families:
            self.append(family)

    def append(self, family: Family) -> None:
        self._families.append(family)
        family._pages.append(self)
        self._cache = None

    def invalidate(self) -> None:
        self._cache = None

    def render(self) -> bytes:
        if self._cache is None:
            self._cache = b"".join([f.chunk() for f in self._families])
        return self._cache
