"""A cheap check that a body is a text exposition at all, before it is scanned.

The selective scan finds nothing on a page of garbage, and "nothing found" would
otherwise read as "every family absent": an error per field while the endpoint
still looks reachable. Rejecting a body that cannot be an exposition turns it
into what it is, a failed poll, so the endpoint goes stale with a clear reason.
"""

from __future__ import annotations

_LINE_START = frozenset(b"#abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:")


class NotAnExposition(ValueError):
    """The body cannot be Prometheus text: empty, or its first line starts wrongly."""


def check_exposition(body: bytes) -> None:
    start = len(body) - len(body.lstrip())
    if start == len(body):
        raise NotAnExposition("empty body")
    if body[start] not in _LINE_START:
        raise NotAnExposition(f"not a Prometheus text exposition (starts with {body[:16]!r})")
