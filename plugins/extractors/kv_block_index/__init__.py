"""`kv-block-index`: the precise prefix-cache index, fed by `kv-events-data-source`."""

from __future__ import annotations

from plugins.extractors.kv_block_index.extractor import (
    KvBlockIndexExtractor,
    KvBlockIndexParameters,
)
from plugins.extractors.kv_block_index.index import PrefixIndex

__all__ = ["KvBlockIndexExtractor", "KvBlockIndexParameters", "PrefixIndex"]
