"""`kv-block-index`: KV-cache events into the precise prefix-cache index MatchPrefix reads.

The one extractor that is more than a per-endpoint parser: every endpoint's
events go into one shared `PrefixIndex` (the instance is the index), and the
gRPC service queries it through `prefix_index()`. Per endpoint it also writes
one structured attribute, `kv-block-index`, with the blocks it holds and the
event stream's health (last seq, gaps, missed, malformed), so a scheduler or
an operator can see an endpoint whose index view is incomplete.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import Parameters
from datalayer.plugin import Extractor
from plugins.extractors.kv_block_index.index import PrefixIndex
from plugins.sources.kv_events.payload import KvEventsPayload

ATTRIBUTE: Final = "kv-block-index"
MAX_CAPACITY: Final = 1_000_000_000


class KvBlockIndexParameters(Parameters):
    #: Tokens per index block; independent of the engines' block size.
    block_size: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 16
    #: Seeds every chain's root (with the model or LoRA name).
    hash_seed: str = ""
    #: Keys kept per medium; the least recently stored go first beyond it.
    capacity: Annotated[int, msgspec.Meta(ge=1, le=MAX_CAPACITY)] = 10_000_000
    #: The model for events whose topic names none and that carry no LoRA name.
    default_model: str = ""


class KvBlockIndexExtractor(Extractor):
    type_name = "kv-block-index"
    description = (
        f"KV-cache events into the prefix-cache index served by MatchPrefix; attribute {ATTRIBUTE}"
    )
    Parameters = KvBlockIndexParameters
    input_type = KvEventsPayload

    def __init__(self, name: str, params: KvBlockIndexParameters) -> None:
        super().__init__(name, params)
        self.index = PrefixIndex(params.block_size, params.capacity, params.hash_seed)
        self.default_model = params.default_model

    def prefix_index(self) -> PrefixIndex:
        """The seam the gRPC service's MatchPrefix reads through."""
        return self.index

    def produced_attributes(self) -> frozenset[str]:
        return frozenset({ATTRIBUTE})

    def forget_endpoint(self, name: str) -> None:
        """The endpoint left the source: none of its blocks can be routed to any more."""
        self.index.remove_endpoint(name)

    def extract(
        self, payload: KvEventsPayload, endpoint: EndpointSpec, out: EndpointUpdate
    ) -> None:
        index = self.index
        if payload.restarted:
            index.remove_endpoint(endpoint.name)
        model = payload.model or self.default_model
        for batch in payload.batches:
            index.apply(endpoint.name, model, batch.events)
        stats = index.endpoints.get(endpoint.name)
        value: dict[str, object] = {"blockSize": index.block_size}
        value.update(payload.sequence.as_attribute())
        if stats is not None:
            value.update(
                blocks=stats.total_blocks,
                blocksByMedium=dict(stats.blocks),
                stored=stats.stored_events,
                removed=stats.removed_events,
                cleared=stats.cleared_events,
                orphaned=stats.orphaned_events,
                inconsistent=stats.inconsistent_events,
                evicted=stats.evicted,
            )
        out.set_attribute(ATTRIBUTE, value)
