"""Fault modes a mock pod can be switched into at runtime, for reliability tests.

`POST /control {"fault": "slow"}` (or `{"fault": {"mode": "flapping", "period": 0.5}}`)
turns one on, `{"fault": null}` heals. Faults apply to what the data layer
reads (`/metrics`, `/v1/models`), never to `/control` or `/health`, so a test
can always heal the pod it broke.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

MODES: Final = (
    "slow",  # answer, but only after `delay` seconds (longer than the poll timeout)
    "http500",  # 500 Internal Server Error
    "garbage",  # 200 with bytes that are not an exposition
    "truncated",  # Content-Length promises more than is sent, then the connection closes
    "oversize",  # a body of `size` bytes, past the scraper's cap
    "reset",  # the TCP connection is reset (RST) before any reply
    "hang",  # headers are sent, then nothing, forever
    "flapping",  # alternates between healthy and `reset` every `period` seconds
)
FAULTY_PATHS: Final = frozenset({"/metrics", "/v1/models"})
GARBAGE: Final = b"\x00\xff\xfe not an exposition {{{ \x01\x02\n" * 256


class FaultError(ValueError):
    """A fault setting that cannot be applied; answered with 400."""


@dataclass(frozen=True)
class Fault:
    mode: str
    delay: float = 3.0
    size: int = 32 * 1024 * 1024
    period: float = 1.0
    since: float = 0.0

    def active_mode(self, now: float) -> str | None:
        """The mode in force now: flapping alternates, starting broken."""
        if self.mode != "flapping":
            return self.mode
        broken = int((now - self.since) / self.period) % 2 == 0
        return "reset" if broken else None


def parse_fault(value: object) -> Fault | None:
    """`null`, a mode name, or `{"mode": ..., "delay"|"size"|"period": number}`."""
    if value is None:
        return None
    if isinstance(value, str):
        value = {"mode": value}
    if not isinstance(value, dict):
        raise FaultError("fault: expected null, a mode name or an object with `mode`")
    mode = value.get("mode")
    if mode not in MODES:
        raise FaultError(f"fault.mode: expected one of {', '.join(MODES)}, got {mode!r}")
    unknown = set(value) - {"mode", "delay", "size", "period"}
    if unknown:
        raise FaultError(f"fault: unknown keys {', '.join(sorted(unknown))}")
    numbers = {}
    for key in ("delay", "size", "period"):
        if key in value:
            number = value[key]
            if isinstance(number, bool) or not isinstance(number, int | float) or number <= 0:
                raise FaultError(f"fault.{key}: expected a positive number")
            numbers[key] = number
    return Fault(
        mode,
        delay=float(numbers.get("delay", 3.0)),
        size=int(numbers.get("size", 32 * 1024 * 1024)),
        period=float(numbers.get("period", 1.0)),
        since=time.monotonic(),
    )


class FaultBox:
    """The pod's current fault; one per pod app."""

    def __init__(self) -> None:
        self.fault: Fault | None = None

    def mode(self) -> str | None:
        return self.fault.active_mode(time.monotonic()) if self.fault else None


FAULTS = web.AppKey("faults", FaultBox)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    box = request.app[FAULTS]
    mode = box.mode() if request.path in FAULTY_PATHS else None
    if mode is None:
        return await handler(request)
    fault = box.fault
    assert fault is not None
    if mode == "slow":
        await asyncio.sleep(fault.delay)
        return await handler(request)
    if mode == "http500":
        return web.Response(status=500, text="injected fault: http500\n")
    if mode == "garbage":
        return web.Response(body=GARBAGE, content_type="text/plain")
    if mode == "oversize":
        return web.Response(body=b"#" * fault.size, content_type="text/plain")
    if mode in ("reset", "truncated", "hang"):
        return await _broken_connection(request, mode)
    raise AssertionError(f"unhandled fault mode {mode}")


async def _broken_connection(request: web.Request, mode: str) -> web.StreamResponse:
    transport = request.transport
    if mode == "reset" and transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:  # linger 0: close() sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        raise asyncio.CancelledError  # nothing more to do for this request
    response = web.StreamResponse(headers={"Content-Type": "text/plain", "Content-Length": "60000"})
    await response.prepare(request)
    if mode == "truncated":
        await response.write(b"# HELP vllm:num_requests_running Number of requests.\n" * 100)
        if transport is not None:
            transport.close()
        return response
    await asyncio.sleep(3600)  # hang: headers sent, body never comes
    return response
