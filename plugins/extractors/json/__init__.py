"""`json-extractor`: dotted paths into a JSON payload → `metrics.custom`."""

from __future__ import annotations

from datalayer.registry import Registry
from plugins.extractors.json.extractor import (
    JsonExtractor,
    JsonExtractorParameters,
    JsonFieldParameters,
)


def register(registry: Registry) -> None:
    """Add `json-extractor` to `registry` (called from `plugins.register`)."""
    registry.register(JsonExtractor)


__all__ = ["JsonExtractor", "JsonExtractorParameters", "JsonFieldParameters", "register"]
