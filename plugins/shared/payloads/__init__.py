"""Payload types and formats shared by the JSON-capable sources and `json-extractor`."""

from plugins.shared.payloads.formats import (
    BodyDecoder,
    PayloadFormat,
    PayloadFormatMixin,
    accept_header,
    payload_type,
)
from plugins.shared.payloads.json_document import JsonDocument, PayloadError
from plugins.shared.payloads.template import EndpointTemplate, TemplateError

__all__ = [
    "BodyDecoder",
    "EndpointTemplate",
    "JsonDocument",
    "PayloadError",
    "PayloadFormat",
    "PayloadFormatMixin",
    "TemplateError",
    "accept_header",
    "payload_type",
]
