import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Metrics(_message.Message):
    __slots__ = ("waiting_queue_size", "running_requests_size", "kv_cache_usage_percent", "cache_block_size", "cache_num_blocks", "active_models", "waiting_models", "max_active_models", "custom", "update_time", "custom_update_time")
    class CustomEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class CustomUpdateTimeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _timestamp_pb2.Timestamp
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
    WAITING_QUEUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_REQUESTS_SIZE_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_USAGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    CACHE_BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    CACHE_NUM_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_MODELS_FIELD_NUMBER: _ClassVar[int]
    WAITING_MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_ACTIVE_MODELS_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    waiting_queue_size: int
    running_requests_size: int
    kv_cache_usage_percent: float
    cache_block_size: int
    cache_num_blocks: int
    active_models: _containers.RepeatedScalarFieldContainer[str]
    waiting_models: _containers.RepeatedScalarFieldContainer[str]
    max_active_models: int
    custom: _containers.ScalarMap[str, float]
    update_time: _timestamp_pb2.Timestamp
    custom_update_time: _containers.MessageMap[str, _timestamp_pb2.Timestamp]
    def __init__(self, waiting_queue_size: _Optional[int] = ..., running_requests_size: _Optional[int] = ..., kv_cache_usage_percent: _Optional[float] = ..., cache_block_size: _Optional[int] = ..., cache_num_blocks: _Optional[int] = ..., active_models: _Optional[_Iterable[str]] = ..., waiting_models: _Optional[_Iterable[str]] = ..., max_active_models: _Optional[int] = ..., custom: _Optional[_Mapping[str, float]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., custom_update_time: _Optional[_Mapping[str, _timestamp_pb2.Timestamp]] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class AttributeValue(_message.Message):
    __slots__ = ("number", "text", "strings", "object", "update_time")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    STRINGS_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    number: float
    text: str
    strings: StringList
    object: _struct_pb2.Value
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, number: _Optional[float] = ..., text: _Optional[str] = ..., strings: _Optional[_Union[StringList, _Mapping]] = ..., object: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("name", "namespace", "address", "port", "labels", "metrics", "attributes", "stale", "last_error", "revision", "owner")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: AttributeValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[AttributeValue, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    name: str
    namespace: str
    address: str
    port: int
    labels: _containers.ScalarMap[str, str]
    metrics: Metrics
    attributes: _containers.MessageMap[str, AttributeValue]
    stale: bool
    last_error: str
    revision: int
    owner: str
    def __init__(self, name: _Optional[str] = ..., namespace: _Optional[str] = ..., address: _Optional[str] = ..., port: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., metrics: _Optional[_Union[Metrics, _Mapping]] = ..., attributes: _Optional[_Mapping[str, AttributeValue]] = ..., stale: _Optional[bool] = ..., last_error: _Optional[str] = ..., revision: _Optional[int] = ..., owner: _Optional[str] = ...) -> None: ...

class GetEndpointRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListEndpointsRequest(_message.Message):
    __slots__ = ("selector", "page_size", "page_token")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    selector: str
    page_size: int
    page_token: str
    def __init__(self, selector: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEndpointsResponse(_message.Message):
    __slots__ = ("endpoints", "revision", "instance_id", "next_page_token")
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    revision: int
    instance_id: str
    next_page_token: str
    def __init__(self, endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., revision: _Optional[int] = ..., instance_id: _Optional[str] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("selector", "names", "attributes", "resume_revision", "resume_instance_id", "min_interval", "heartbeat_interval", "owned_only")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    RESUME_REVISION_FIELD_NUMBER: _ClassVar[int]
    RESUME_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    OWNED_ONLY_FIELD_NUMBER: _ClassVar[int]
    selector: str
    names: _containers.RepeatedScalarFieldContainer[str]
    attributes: _containers.RepeatedScalarFieldContainer[str]
    resume_revision: int
    resume_instance_id: str
    min_interval: _duration_pb2.Duration
    heartbeat_interval: _duration_pb2.Duration
    owned_only: bool
    def __init__(self, selector: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ..., attributes: _Optional[_Iterable[str]] = ..., resume_revision: _Optional[int] = ..., resume_instance_id: _Optional[str] = ..., min_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., owned_only: _Optional[bool] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("type", "endpoint")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[WatchEvent.Type]
        ADDED: _ClassVar[WatchEvent.Type]
        UPDATED: _ClassVar[WatchEvent.Type]
        REMOVED: _ClassVar[WatchEvent.Type]
    TYPE_UNSPECIFIED: WatchEvent.Type
    ADDED: WatchEvent.Type
    UPDATED: WatchEvent.Type
    REMOVED: WatchEvent.Type
    TYPE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    type: WatchEvent.Type
    endpoint: Endpoint
    def __init__(self, type: _Optional[_Union[WatchEvent.Type, str]] = ..., endpoint: _Optional[_Union[Endpoint, _Mapping]] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("events", "revision", "instance_id", "synced", "full_snapshot")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SYNCED_FIELD_NUMBER: _ClassVar[int]
    FULL_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[WatchEvent]
    revision: int
    instance_id: str
    synced: bool
    full_snapshot: bool
    def __init__(self, events: _Optional[_Iterable[_Union[WatchEvent, _Mapping]]] = ..., revision: _Optional[int] = ..., instance_id: _Optional[str] = ..., synced: _Optional[bool] = ..., full_snapshot: _Optional[bool] = ...) -> None: ...

class MatchPrefixRequest(_message.Message):
    __slots__ = ("model", "token_ids", "selector")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    model: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    selector: str
    def __init__(self, model: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., selector: _Optional[str] = ...) -> None: ...

class PrefixMatch(_message.Message):
    __slots__ = ("endpoint", "matched_blocks", "block_size")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MATCHED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    matched_blocks: int
    block_size: int
    def __init__(self, endpoint: _Optional[str] = ..., matched_blocks: _Optional[int] = ..., block_size: _Optional[int] = ...) -> None: ...

class MatchPrefixResponse(_message.Message):
    __slots__ = ("matches", "total_blocks")
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    matches: _containers.RepeatedCompositeFieldContainer[PrefixMatch]
    total_blocks: int
    def __init__(self, matches: _Optional[_Iterable[_Union[PrefixMatch, _Mapping]]] = ..., total_blocks: _Optional[int] = ...) -> None: ...
