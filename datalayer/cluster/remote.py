"""A peer's `Endpoint` message as this store's state (the inverse of server/convert.py).

Kept here, not in the server package: the store side of a relay is core code and the
wire format is the contract both sides share.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from datalayer.model import SCALAR_METRIC_FIELDS, Attribute, AttributeData, Metrics
from datalayer.v1 import datalayer_pb2 as pb


def _seconds(ts: Any) -> float:
    return float(ts.seconds) + float(ts.nanos) / 1e9


def metrics_from_proto(message: pb.Metrics) -> Metrics:
    """Absent fields stay None (unknown), exactly as the owner's store holds them."""
    metrics = Metrics(
        active_models=tuple(message.active_models),
        waiting_models=tuple(message.waiting_models),
        custom=dict(message.custom),
        update_time=_seconds(message.update_time),
        custom_update_time={k: _seconds(v) for k, v in message.custom_update_time.items()},
    )
    for name in SCALAR_METRIC_FIELDS:
        if message.HasField(name):
            setattr(metrics, name, getattr(message, name))
    return metrics


def attribute_from_proto(message: pb.AttributeValue) -> Attribute:
    kind = message.WhichOneof("kind")
    value: AttributeData
    if kind == "number":
        value = message.number
    elif kind == "text":
        value = message.text
    elif kind == "strings":
        value = tuple(message.strings.values)
    else:
        value = json_format.MessageToDict(message.object)
    return Attribute(value, _seconds(message.update_time))


def attributes_from_proto(message: pb.Endpoint) -> dict[str, Attribute]:
    return {key: attribute_from_proto(value) for key, value in message.attributes.items()}
