"""`kv-events-data-source`: vLLM/SGLang KV-cache events over ZMQ, one SUB per endpoint."""

from __future__ import annotations

from plugins.sources.kv_events.payload import KvEventsPayload, SequenceStats
from plugins.sources.kv_events.source import KvEventsDataSource, KvEventsSourceParameters

__all__ = ["KvEventsDataSource", "KvEventsPayload", "KvEventsSourceParameters", "SequenceStats"]
