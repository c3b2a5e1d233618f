"""Store records and hub batches → protobuf messages (the only place that knows both)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from datalayer.hub import Batch, EventKind
from datalayer.model import METRICS_PART, AttributeData, Metrics
from datalayer.store import EndpointRecord
from datalayer.v1 import datalayer_pb2 as pb

_EVENT_TYPES = {
    EventKind.ADDED: pb.WatchEvent.ADDED,
    EventKind.UPDATED: pb.WatchEvent.UPDATED,
    EventKind.REMOVED: pb.WatchEvent.REMOVED,
}


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if seconds:
        ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def metrics_to_proto(metrics: Metrics) -> pb.Metrics:
    return pb.Metrics(
        waiting_queue_size=metrics.waiting_queue_size,
        running_requests_size=metrics.running_requests_size,
        kv_cache_usage_percent=metrics.kv_cache_usage_percent,
        cache_block_size=metrics.cache_block_size,
        cache_num_blocks=metrics.cache_num_blocks,
        active_models=metrics.active_models,
        waiting_models=metrics.waiting_models,
        max_active_models=metrics.max_active_models,
        custom=metrics.custom,
        update_time=timestamp(metrics.update_time),
        custom_update_time={k: timestamp(v) for k, v in metrics.custom_update_time.items()},
    )


def attribute_to_proto(value: AttributeData, update_time: float) -> pb.AttributeValue:
    out = pb.AttributeValue(update_time=timestamp(update_time))
    if isinstance(value, bool):
        out.object.bool_value = value
    elif isinstance(value, int | float):
        out.number = float(value)
    elif isinstance(value, str):
        out.text = value
    elif isinstance(value, tuple):
        out.strings.values.extend(value)
    else:
        out.object.CopyFrom(json_value(value))
    return out


def json_value(value: Any) -> struct_pb2.Value:
    """A JSON-like Python value as a `google.protobuf.Value`."""
    out = struct_pb2.Value()
    if isinstance(value, Mapping):
        out.struct_value.update(value)
    elif isinstance(value, list | tuple):
        out.list_value.extend(value)
    elif value is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int | float):
        out.number_value = value
    else:
        out.string_value = str(value)
    return out


def endpoint_to_proto(record: EndpointRecord, parts: frozenset[str] = frozenset()) -> pb.Endpoint:
    """The full endpoint, or only the `parts` a subscription asked for (empty = all)."""
    spec = record.spec
    out = pb.Endpoint(
        name=spec.name,
        namespace=spec.namespace,
        address=spec.address,
        port=spec.port,
        labels=spec.labels,
        stale=record.stale,
        last_error=record.last_error,
        revision=record.revision,
    )
    if not parts or METRICS_PART in parts:
        out.metrics.CopyFrom(metrics_to_proto(record.metrics))
    for key, attribute in record.attributes.items():
        if not parts or key in parts:
            out.attributes[key].CopyFrom(attribute_to_proto(attribute.value, attribute.update_time))
    return out


def batch_to_proto(
    batch: Batch, instance_id: str, parts: frozenset[str] = frozenset()
) -> pb.WatchResponse:
    response = pb.WatchResponse(
        revision=batch.revision,
        instance_id=instance_id,
        synced=batch.synced,
        full_snapshot=batch.full_snapshot,
    )
    for event in batch.events:
        if event.record is None:
            endpoint = pb.Endpoint(name=event.name)
        else:
            endpoint = endpoint_to_proto(event.record, parts)
        response.events.add(type=_EVENT_TYPES[event.kind], endpoint=endpoint)
    return response
