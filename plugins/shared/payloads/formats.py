"""Payload formats shared by the sources that can read either JSON or Prometheus text.

The unix-socket, file and push sources read the same bytes a model server
exposes, in one of two formats chosen per source instance by its `format`
parameter. The format decides the payload type, so it decides which extractors
may be wired under that instance. `PayloadFormatMixin` makes the config
loader's wiring check use the instance's type instead of the class attribute
(which only documents the default format for `datalayer plugins`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, TypeAlias

from datalayer.plugin import DataSource, Extractor
from plugins.shared.payloads.json_document import JsonDocument, PayloadError
from plugins.shared.prometheus import MetricSamples, SelectiveScanner
from plugins.shared.prometheus.sanity import NotAnExposition, check_exposition

PayloadFormat: TypeAlias = Literal["prometheus", "json"]

#: Ask for the classic text format: OpenMetrics renames samples.
PROMETHEUS_ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
JSON_ACCEPT = "application/json"


def payload_type(fmt: PayloadFormat) -> type:
    """The payload class a source of format `fmt` hands its extractors."""
    return MetricSamples if fmt == "prometheus" else JsonDocument


def accept_header(fmt: PayloadFormat) -> str:
    return PROMETHEUS_ACCEPT if fmt == "prometheus" else JSON_ACCEPT


class BodyDecoder:
    """Bytes → payload for one format; built in `start()` once the extractors are known.

    The one payload path of every source that reads Prometheus text or JSON
    (`metrics-data-source` included), so a check made here is made for all of
    them: a body that is not an exposition (an HTML error page, an empty reply)
    raises PayloadError, a failed read, whichever transport brought it. For
    Prometheus only the sample names the extractors declared are scanned (the
    selective scanner, with its per-scan caps).

    >>> BodyDecoder("prometheus").decode(b"<html>")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    PayloadError: not a Prometheus text exposition (starts with b'<html>')
    """

    __slots__ = ("_scanner",)

    def __init__(self, fmt: PayloadFormat, extractors: Iterable[Extractor] = ()) -> None:
        names: set[str] = set()
        for extractor in extractors:
            names |= extractor.required_names()
        self._scanner = SelectiveScanner(names) if fmt == "prometheus" else None

    @property
    def scanner(self) -> SelectiveScanner | None:
        """The Prometheus scanner (None for JSON); for cache accounting and benchmarks."""
        return self._scanner

    def decode(self, body: bytes) -> MetricSamples | JsonDocument:
        """Raise PayloadError when a JSON body does not parse or a text body is not an
        exposition; a text page that is one never fails (unreadable lines are skipped)."""
        if self._scanner is not None:
            try:
                check_exposition(body)
            except NotAnExposition as exc:
                raise PayloadError(str(exc)) from None
            return self._scanner.scan(body)
        return JsonDocument.parse(body)

    def decode_samples(self, body: bytes) -> MetricSamples:
        """`decode` for a source that only ever reads Prometheus text."""
        payload = self.decode(body)
        if not isinstance(payload, MetricSamples):
            raise TypeError("decode_samples on a JSON decoder")
        return payload


class PayloadFormatMixin(DataSource):
    """For sources whose payload type is chosen per instance by a `format` parameter."""

    #: The instance's format; set in `__init__` from the parameters.
    payload_format: PayloadFormat = "prometheus"
    #: Built at `start`, once the extractors (and so the names to scan for) are known.
    _decoder: BodyDecoder | None = None

    def start(self, extractors: Sequence[Extractor]) -> None:
        self._decoder = BodyDecoder(self.payload_format, extractors)

    def check_extractor(self, extractor: Extractor) -> str | None:
        produced = payload_type(self.payload_format)
        if issubclass(produced, extractor.input_type):
            return None
        return (
            f"extractor {extractor.name!r} ({extractor.type_name}) takes "
            f"{extractor.input_type.__name__} but source {self.name!r} ({self.type_name}, "
            f"format: {self.payload_format}) produces {produced.__name__}"
        )


__all__ = [
    "JSON_ACCEPT",
    "PROMETHEUS_ACCEPT",
    "BodyDecoder",
    "PayloadError",
    "PayloadFormat",
    "PayloadFormatMixin",
    "accept_header",
    "payload_type",
]
