"""MatchPrefix: the gRPC face of the prefix-cache index, and the seam that finds the index.

The service must not know a plugin type, and the index lives inside a plugin
(`kv-block-index`). The seam is duck-typed: any configured plugin with a
`prefix_index()` method offers an index with a `block_size` and
`match(model, tokens)`. The app hands the service a callable that looks them up
in the *current* configuration, so a reload that adds or drops the index is
seen by the next call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Protocol

import grpc

from datalayer.selector import SelectorError, parse_selector
from datalayer.store import EndpointStore
from datalayer.v1 import datalayer_pb2 as pb

#: Tokens per request: 256 Ki tokens is past every model's context today and ~1 MiB on the wire.
MAX_PROMPT_TOKENS: Final = 262_144
MAX_MODEL_CHARS: Final = 256


class PrefixIndexView(Protocol):
    """What MatchPrefix needs of an index (plugins/extractors/kv_block_index has one)."""

    block_size: int

    def match(self, model: str, tokens: Sequence[int]) -> tuple[dict[str, int], int]: ...


def prefix_indexes(plugins: Iterable[Any]) -> list[PrefixIndexView]:
    """The indexes offered by `plugins` (a config's plugin instances)."""
    found = []
    for plugin in plugins:
        offer = getattr(plugin, "prefix_index", None)
        if callable(offer):
            found.append(offer())
    return found


class PrefixRequestError(Exception):
    """A MatchPrefix that cannot be answered: the status code and a message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PrefixMatcher:
    """Answers MatchPrefix from the indexes `indexes()` returns at each call."""

    def __init__(
        self, store: EndpointStore, indexes: Callable[[], Sequence[PrefixIndexView]]
    ) -> None:
        self.store = store
        self.indexes = indexes

    def answer(self, request: pb.MatchPrefixRequest) -> bytes:
        """The serialized `MatchPrefixResponse`; raises PrefixRequestError."""
        indexes = self.indexes()
        if not indexes:
            raise PrefixRequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "no prefix-cache index is configured: declare a kv-block-index extractor "
                "under a kv-events-data-source",
            )
        tokens = request.token_ids
        if len(tokens) > MAX_PROMPT_TOKENS:
            raise PrefixRequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"token_ids: {len(tokens)} tokens, at most {MAX_PROMPT_TOKENS} are accepted",
            )
        if len(request.model) > MAX_MODEL_CHARS:
            raise PrefixRequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"model: at most {MAX_MODEL_CHARS} characters, got {len(request.model)}",
            )
        try:
            selector = parse_selector(request.selector)
        except SelectorError as exc:
            raise PrefixRequestError(grpc.StatusCode.INVALID_ARGUMENT, f"selector: {exc}") from None
        # Several indexes (several sources, other block sizes): an endpoint's best is the one
        # covering the most tokens; total_blocks is in the first index's block size.
        best: dict[str, tuple[int, int]] = {}  # endpoint -> (matched tokens, block size)
        total = 0
        for i, index in enumerate(indexes):
            matches, blocks = index.match(request.model, tokens)
            if i == 0:
                total = blocks
            size = index.block_size
            for name, count in matches.items():
                if count * size > best.get(name, (0, 0))[0]:
                    best[name] = (count * size, size)
        response = pb.MatchPrefixResponse(total_blocks=total)
        ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))
        for name, (matched_tokens, size) in ranked:
            if selector.requirements:
                record = self.store.get(name)
                if record is None or not selector.matches(record.spec.labels):
                    continue
            response.matches.add(
                endpoint=name, matched_blocks=matched_tokens // size, block_size=size
            )
        return response.SerializeToString()
