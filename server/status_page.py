"""`/status` and `/status.json` on the metrics port: what this instance sees, for a person.

The page (``server/status_html.py``) is one self-contained HTML document that fetches
`/status.json` every two seconds, so there is no build step and nothing external to load.
The JSON is built on the event loop from the store, the hub and the collector's lanes; it
is a read, so it sees one consistent moment. A fleet can be large: endpoints are sorted
worst first (stale, degraded, fresh) and only the first `limit` are described, while the
counts always cover all of them.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

from aiohttp import web

from console.rows import HEALTH_ORDER, engine_of, health_state
from datalayer.collector import Collector
from datalayer.config import DataLayerConfig, plugin_parameters_as_dict
from datalayer.hub import Hub, Subscriber
from datalayer.plugin import Plugin
from datalayer.selector import EVERYTHING, Selector, SelectorError, parse_selector
from datalayer.store import EndpointRecord, EndpointStore
from server.status_html import PAGE

DEFAULT_LIMIT = 500
MAX_LIMIT = 5000
#: Subscribers described one by one; beyond this only the count is given.
MAX_SUBSCRIBERS_LISTED = 200


class StatusSource(Protocol):
    """What the page reads; `DataLayerApp` has these (re-read per request: a reload swaps
    the collector and the config)."""

    store: EndpointStore
    hub: Hub
    collector: Collector
    config: DataLayerConfig


def add_status_routes(app: web.Application, source: StatusSource) -> None:
    """Serve the page at `/status` and its data at `/status.json`."""
    started = time.time()

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text=PAGE, content_type="text/html", headers={"Cache-Control": "no-store"}
        )

    async def data(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", DEFAULT_LIMIT))
            selector = parse_selector(request.query.get("selector", ""))
        except (ValueError, SelectorError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        body = build_status(
            source,
            started=started,
            limit=max(0, min(limit, MAX_LIMIT)),
            name_contains=request.query.get("q", ""),
            selector=selector,
        )
        return web.Response(
            text=json.dumps(body, default=str),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    app.router.add_get("/status", page)
    app.router.add_get("/status.json", data)


def build_status(
    source: StatusSource,
    *,
    started: float,
    limit: int = DEFAULT_LIMIT,
    name_contains: str = "",
    selector: Selector = EVERYTHING,
) -> dict[str, Any]:
    """The whole status document (see the module docstring for what is cut and why)."""
    now = time.time()
    store = source.store
    records = [
        record
        for record in store
        if name_contains in record.name and selector.matches(record.spec.labels)
    ]
    counts = dict.fromkeys(HEALTH_ORDER, 0)
    keyed: list[tuple[int, str, EndpointRecord]] = []
    for record in records:
        state = health_state(record.stale, record.last_error)
        counts[state] += 1
        keyed.append((HEALTH_ORDER[state], record.name, record))
    keyed.sort(key=lambda item: item[:2])
    collector = source.collector
    return {
        "generated_at": now,
        "instance_id": store.instance_id,
        "revision": store.revision,
        "uptime_seconds": now - started,
        "synced": collector.synced.is_set(),
        "counts": {"total": len(store), "matching": len(records), **counts},
        "limit": limit,
        "endpoints": [_endpoint(r, collector, now) for _, _, r in keyed[:limit]],
        "subscribers": _subscribers(source.hub),
        "collector": {"tasks": collector.task_count(), "polls": collector.polls()},
        "config": _config(source.config),
        # A replica group's membership and shares (serve --workers, cluster:); None alone.
        "cluster": group.describe() if (group := getattr(source, "group", None)) else None,
    }


def _endpoint(record: EndpointRecord, collector: Collector, now: float) -> dict[str, Any]:
    spec = record.spec
    metrics = record.metrics
    return {
        "name": spec.name,
        "namespace": spec.namespace,
        "address": spec.host_port,
        "labels": dict(spec.labels),
        "engine": engine_of(spec.labels),
        "state": health_state(record.stale, record.last_error),
        "stale": record.stale,
        "last_error": record.last_error,
        "revision": record.revision,
        "age": max(0.0, now - metrics.update_time) if metrics.update_time else None,
        # None (JSON null) = not known within the staleness threshold; the page shows "-".
        "waiting": metrics.waiting_queue_size,
        "running": metrics.running_requests_size,
        "kv": metrics.kv_cache_usage_percent,
        "cache_block_size": metrics.cache_block_size,
        "cache_num_blocks": metrics.cache_num_blocks,
        "active_models": list(metrics.active_models),
        "waiting_models": list(metrics.waiting_models),
        "max_active_models": metrics.max_active_models,
        "custom": dict(metrics.custom),
        "attributes": sorted(record.attributes),
        "lanes": [
            {
                "source": lane.source,
                "source_type": lane.source_type,
                "event_driven": lane.event_driven,
                "polls": lane.polls,
                "since_success": lane.since_success,
                "error": lane.error,
                "stale": lane.stale,
            }
            for lane in collector.lane_states(spec.name)
        ],
    }


def _subscribers(hub: Hub) -> dict[str, Any]:
    subscribers = list(hub.subscribers)
    stats = hub.stats
    return {
        "count": len(subscribers),
        "limit": hub.max_subscribers,
        "events_sent": stats.events_sent,
        "coalesced": stats.coalesced,
        "streams": [_subscriber(s) for s in subscribers[:MAX_SUBSCRIBERS_LISTED]],
    }


def _subscriber(subscriber: Subscriber) -> dict[str, Any]:
    # The one place that reads the hub's per-subscriber bookkeeping.
    watch_filter = subscriber.filter
    return {
        "selector": watch_filter.selector.text,
        "names": len(watch_filter.names),
        "parts": sorted(watch_filter.parts),
        "min_interval": subscriber.min_interval,
        "heartbeat_interval": subscriber.heartbeat_interval,
        "pending": len(subscriber.pending),
        "known": len(subscriber.known),
    }


def _plugin(plugin: Plugin) -> dict[str, Any]:
    return {
        "name": plugin.name,
        "type": plugin.type_name,
        "parameters": plugin_parameters_as_dict(plugin),
    }


def _config(config: DataLayerConfig) -> dict[str, Any]:
    settings = config.collector
    discovery = config.discovery
    return {
        "file": config.file,
        "kind": config.kind,
        "warnings": list(config.warnings),
        "interval": settings.interval,
        "timeout": settings.timeout,
        "staleness_threshold": settings.staleness_threshold,
        "discovery": _plugin(discovery) if discovery is not None else None,
        "sources": [
            {
                **_plugin(binding.source),
                "interval": binding.interval,
                "timeout": binding.timeout,
                "selector": binding.selector.text,
                "extractors": [_plugin(e) for e in binding.extractors],
            }
            for binding in config.sources
        ],
    }
