"""The one check that a body is a text exposition at all, before it is scanned.

The selective scan finds nothing on a page of garbage, and "nothing found" would
otherwise read as "every family absent": an error per field while the endpoint
still looks reachable. Rejecting a body that cannot be an exposition turns it
into what it is, a failed read, so the endpoint goes stale with a clear reason.
Every source that decodes Prometheus text runs it (`plugins.shared.payloads.BodyDecoder`,
which `metrics-data-source`, `unix-socket-data-source`, `file-data-source` and
`push-data-source` all decode through), so a proxy's HTML error page served with
status 200 is a failed read whichever way it arrived.

It is deliberately cheap (the first bytes only): a body that passes but holds no
wanted sample, say `process_cpu_seconds_total 12.5` alone, is caught one step
later, because the extractors then record no reading and the collector counts
a read with no reading as failed.
"""

from __future__ import annotations

import re
from typing import Final

_LINE_START: Final = frozenset(b"#abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:")
#: Leading whitespace, found without copying the body (`bytes.lstrip` copies all of it).
_LEADING_SPACE: Final = re.compile(rb"[ \t\n\r\x0b\x0c]*")


class NotAnExposition(ValueError):
    """The body cannot be Prometheus text: empty, or its first line starts wrongly."""


def check_exposition(body: bytes) -> None:
    """Raise NotAnExposition (saying why) unless `body` can be a text exposition."""
    space = _LEADING_SPACE.match(body)
    start = space.end() if space else 0
    if start == len(body):
        raise NotAnExposition("empty body")
    if body[start] not in _LINE_START:
        raise NotAnExposition(f"not a Prometheus text exposition (starts with {body[:16]!r})")
