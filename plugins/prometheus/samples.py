"""The payload of Prometheus sources: the samples of the wanted names, nothing else."""

from __future__ import annotations

from typing import NamedTuple


class Sample(NamedTuple):
    """One series line: its labels and value (the optional timestamp is dropped)."""

    labels: dict[str, str]
    value: float


class MetricSamples(dict[str, list[Sample]]):
    """Samples keyed by the exact sample name on the line (`vllm:prompt_tokens_total`).

    A real class rather than an alias because sources and extractors declare it
    as their payload type and the wiring check compares types. A wanted name
    with no line on the page has no key, so "family absent" is `name not in`.
    Samples keep page order.
    """

    __slots__ = ()
