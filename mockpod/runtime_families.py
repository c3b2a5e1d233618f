"""The families every prometheus_client web app shows besides its own: Python GC, the Python
version, the process, and HTTP server instrumentation (prometheus-fastapi-instrumentator,
as vLLM uses it).

A scheduler never reads them, but they are most of the page it has to get through, so a
mock without them would flatter the scraper.
"""

from __future__ import annotations

from mockpod.exposition import CounterFamily, Family, GaugeFamily, HistogramFamily, SummaryFamily
from mockpod.page import HttpExchange

__all__ = ["HttpFamilies", "process_families"]

_GC_COLLECTED = (14237.0, 3142.0, 781.0)
_GC_COLLECTIONS = (1912.0, 173.0, 12.0)


def process_families(started_at: float) -> list[Family]:
    """Static values shaped like a vLLM API server's: they never change, so render once."""
    collected = CounterFamily(
        "python_gc_objects_collected", "Objects collected during gc", created=False
    )
    uncollectable = CounterFamily(
        "python_gc_objects_uncollectable", "Uncollectable objects found during GC", created=False
    )
    collections = CounterFamily(
        "python_gc_collections", "Number of times this generation was collected", created=False
    )
    for gen in range(3):
        labels = {"generation": str(gen)}
        collected.add(gen, labels, 0.0, _GC_COLLECTED[gen])
        uncollectable.add(gen, labels, 0.0, 0.0)
        collections.add(gen, labels, 0.0, _GC_COLLECTIONS[gen])
    info = GaugeFamily("python_info", "Python platform information")
    info.add(
        0,
        {
            "implementation": "CPython",
            "major": "3",
            "minor": "12",
            "patchlevel": "11",
            "version": "3.12.11",
        },
        1.0,
    )
    families: list[Family] = [collected, uncollectable, collections, info]
    for name, help_text, value in (
        ("process_virtual_memory_bytes", "Virtual memory size in bytes.", 62_453_768_192.0),
        ("process_resident_memory_bytes", "Resident memory size in bytes.", 3_127_365_632.0),
        (
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            round(started_at, 2),
        ),
    ):
        gauge = GaugeFamily(name, help_text)
        gauge.add(0, {}, value)
        families.append(gauge)
    cpu = CounterFamily(
        "process_cpu_seconds", "Total user and system CPU time spent in seconds.", created=False
    )
    cpu.add(0, {}, 0.0, 187.42)
    families.append(cpu)
    for name, help_text, value in (
        ("process_open_fds", "Number of open file descriptors.", 87.0),
        ("process_max_fds", "Maximum number of open file descriptors.", 1_048_576.0),
    ):
        gauge = GaugeFamily(name, help_text)
        gauge.add(0, {}, value)
        families.append(gauge)
    return families


_HIGHR_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5,
    5.0, 7.5, 10.0, 30.0, 60.0,
)  # fmt: skip
_HANDLER_BUCKETS = (0.1, 0.5, 1.0)

# Handlers a serving pod has already answered, so a fresh mock's page is as big as a real one's.
SEEDED_HANDLERS = (
    ("/v1/chat/completions", "POST"),
    ("/v1/completions", "POST"),
    ("/v1/models", "GET"),
)


class HttpFamilies:
    """The instrumentator's five families; series appear as handlers and statuses are seen."""

    def __init__(self, started_at: float) -> None:
        self._created = started_at
        self.requests = CounterFamily(
            "http_requests", "Total number of requests by method, status and handler."
        )
        self.request_size = SummaryFamily(
            "http_request_size_bytes",
            "Content length of incoming requests by handler. Only value of header is respected. "
            "Otherwise ignored. No percentile calculated. ",
        )
        self.response_size = SummaryFamily(
            "http_response_size_bytes",
            "Content length of outgoing responses by handler. Only value of header is "
            "respected. Otherwise ignored. No percentile calculated. ",
        )
        self.duration_highr = HistogramFamily(
            "http_request_duration_highr_seconds",
            "Latency with many buckets but no API specific labels. Made for more accurate "
            "percentile calculations. ",
            _HIGHR_BUCKETS,
        )
        self.duration = HistogramFamily(
            "http_request_duration_seconds",
            "Latency with only few buckets by handler. Made to be only used if aggregation by "
            "handler is important. ",
            _HANDLER_BUCKETS,
        )
        self.duration_highr.add(None, {}, started_at)
        for handler, method in SEEDED_HANDLERS:
            self._ensure(handler, method, "2xx")

    @property
    def families(self) -> list[Family]:
        return [
            self.requests,
            self.request_size,
            self.response_size,
            self.duration_highr,
            self.duration,
        ]

    def _ensure(self, handler: str, method: str, status: str) -> None:
        created = self._created
        self.requests.add(
            (handler, method, status),
            {"handler": handler, "method": method, "status": status},
            created,
        )
        self.request_size.add(handler, {"handler": handler}, created)
        self.response_size.add(handler, {"handler": handler}, created)
        self.duration.add((handler, method), {"handler": handler, "method": method}, created)

    def record(self, exchange: HttpExchange) -> None:
        # The instrumentator groups status codes: 200 -> "2xx".
        status = f"{exchange.status // 100}xx"
        self._ensure(exchange.handler, exchange.method, status)
        self.requests.inc((exchange.handler, exchange.method, status))
        self.request_size.observe(exchange.handler, exchange.request_bytes)
        self.response_size.observe(exchange.handler, exchange.response_bytes)
        self.duration_highr.observe(None, exchange.seconds)
        self.duration.observe((exchange.handler, exchange.method), exchange.seconds)
