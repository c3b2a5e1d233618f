"""The process around the service: the event loop it runs on and the signals that end it.

Apart from the CLI so that every command (serve, demo, mock-pod, the benchmarks) runs the
same way without importing the CLI's argument handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import uvloop


def run_async(factory: Callable[[], Coroutine[Any, Any, Any] | Awaitable[Any]]) -> None:
    """Run `factory()` to completion on uvloop (cheaper sockets and timers); Ctrl-C ends it."""

    async def _main() -> None:
        await factory()

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_main())


async def wait_for_signal() -> None:
    """Return on SIGINT or SIGTERM (a clean shutdown follows in the caller)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
