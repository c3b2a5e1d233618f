"""The service's own Prometheus metrics (prefix `datalayer_`) and structured logging.

Labels are bounded: source and extractor types and states, never endpoint
names, so a fleet of thousands of pods does not become thousands of series
here. Per-endpoint detail is on the status page (`/status`), not in metrics.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from datalayer.hub import Hub
from datalayer.store import EndpointStore

SCRAPE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Writing one Watch response: microseconds when the client keeps up, long when it does not.
SEND_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5)
#: Quantiles of the current data age over the endpoints; 1 is the oldest endpoint's.
AGE_QUANTILES = (0.5, 0.9, 0.99, 1.0)
WATCH_METHOD = "/datalayer.v1.DataLayer/Watch"


class SelfMetrics:
    """Implements the collector's observer hooks and exports store/hub state."""

    def __init__(self, store: EndpointStore, hub: Hub) -> None:
        self.registry = CollectorRegistry()
        self.scrape_duration = Histogram(
            "datalayer_scrape_duration_seconds",
            "Duration of one poll of one endpoint, by source type.",
            ["source_type"],
            buckets=SCRAPE_BUCKETS,
            registry=self.registry,
        )
        self.poll_errors = Counter(
            "datalayer_poll_errors",
            "Polls that failed, by source type.",
            ["source_type"],
            registry=self.registry,
        )
        self.extract_errors = Counter(
            "datalayer_extract_errors",
            "Fields extractors could not read, by source type and extractor type.",
            ["source_type", "extractor_type"],
            registry=self.registry,
        )
        self.watch_send = Histogram(
            "datalayer_watch_send_seconds",
            "Time to write one response on a Watch stream (slow readers show here).",
            buckets=SEND_BUCKETS,
            registry=self.registry,
        )
        self.state_changes = Counter(
            "datalayer_endpoint_state_changes",
            "Endpoints turning stale or fresh.",
            ["to"],
            registry=self.registry,
        )
        self.registry.register(_StateCollector(store, hub))

    def on_poll(self, source_type: str, seconds: float, error: str | None) -> None:
        self.scrape_duration.labels(source_type).observe(seconds)
        if error is not None:
            self.poll_errors.labels(source_type).inc()

    def on_extract_errors(self, source_type: str, count: int, extractor_type: str = "") -> None:
        self.extract_errors.labels(source_type, extractor_type or "unknown").inc(count)

    def on_state_change(self, name: str, stale: bool, reason: str) -> None:
        self.state_changes.labels("stale" if stale else "fresh").inc()

    def watch_interceptor(self) -> grpc.aio.ServerInterceptor:
        """Times each Watch response write into `datalayer_watch_send_seconds`."""
        return _WatchSendTimer(self.watch_send.observe)


class _WatchSendTimer(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps the Watch handler's stream: the time between yielding a response and being
    asked for the next one is gRPC serializing and writing it, flow control included."""

    def __init__(self, observe: Callable[[float], None]) -> None:
        self._observe = observe

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if (
            handler is None
            or details.method != WATCH_METHOD
            or not inspect.isasyncgenfunction(handler.unary_stream)
        ):
            return handler
        behavior = handler.unary_stream
        observe = self._observe

        async def timed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            stream = behavior(request, context)
            try:
                async for response in stream:
                    started = time.perf_counter()
                    yield response
                    observe(time.perf_counter() - started)
            finally:
                await stream.aclose()  # runs the handler's cleanup (unsubscribe) now, not at GC

        return grpc.unary_stream_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class _StateCollector(Collector):
    """Gauges computed at scrape time from the store and hub: no bookkeeping on the hot path."""

    def __init__(self, store: EndpointStore, hub: Hub) -> None:
        self.store = store
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        endpoints = GaugeMetricFamily(
            "datalayer_endpoints", "Endpoints in the store, by state.", labels=["state"]
        )
        now = time.time()
        stale = 0
        ages: list[float] = []
        for record in self.store:
            stale += record.stale
            if record.metrics.update_time:
                ages.append(max(0.0, now - record.metrics.update_time))
        endpoints.add_metric(["fresh"], len(self.store) - stale)
        endpoints.add_metric(["stale"], stale)
        yield endpoints
        age = GaugeMetricFamily(
            "datalayer_data_age_seconds",
            "Seconds since each endpoint's last successful read, as quantiles over the "
            "endpoints that have been read (1 = the oldest); computed at scrape time.",
            labels=["quantile"],
        )
        if ages:
            ages.sort()
            for q in AGE_QUANTILES:
                age.add_metric([f"{q:g}"], ages[min(len(ages) - 1, math.ceil(q * len(ages)) - 1)])
        yield age
        yield GaugeMetricFamily(
            "datalayer_subscribers", "Open Watch streams.", value=len(self.hub.subscribers)
        )
        yield GaugeMetricFamily(
            "datalayer_store_revision", "The store's current revision.", value=self.store.revision
        )
        stats = self.hub.stats
        yield CounterMetricFamily(
            "datalayer_watch_events_sent", "Events sent on Watch streams.", value=stats.events_sent
        )
        yield CounterMetricFamily(
            "datalayer_watch_events_coalesced",
            "Updates folded into a pending one for a slow subscriber.",
            value=stats.coalesced,
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra={...}` fields are kept as keys."""

    _STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
