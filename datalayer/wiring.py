"""What the runtime runs: a source with its extractors, timing and selector, and the
collector's timing. The config loader builds these; the collector and the app only read
them, and need nothing else of the loader.
"""

from __future__ import annotations

from dataclasses import dataclass

from datalayer.parameters import Duration
from datalayer.plugin import DataSource, Extractor
from datalayer.selector import EVERYTHING, Selector


@dataclass(frozen=True)
class CollectorSettings:
    """How often and how patiently endpoints are polled; defaults follow upstream."""

    interval: Duration = 0.05
    timeout: Duration = 1.0
    staleness_threshold: Duration = 2.0


@dataclass(eq=False)  # identity: bindings are keys of the collector's bookkeeping
class SourceBinding:
    """One configured source with its extractors, its own timing and the endpoints it serves."""

    source: DataSource
    extractors: list[Extractor]
    interval: float
    timeout: float
    #: Which endpoints this source collects from (non-uniform collection); all by default.
    selector: Selector = EVERYTHING
