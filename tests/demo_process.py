"""`datalayer demo` as a user starts it: a real process, its start-up banner parsed.

Shared by the tests that run the README's commands against the demo (tests/test_grpcurl.py,
tests/test_readme_examples.py). The demo streams a line per update forever, so a thread keeps
reading its stdout (a full pipe would stall the demo) and keeps every line for the tests.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from datalayer.client import DataLayerClient

DATALAYER = str(Path(sys.executable).with_name("datalayer"))


@dataclass
class Demo:
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    grpc_port: int = 0
    metrics_port: int = 0
    pod_ports: dict[str, int] = field(default_factory=dict)

    @property
    def target(self) -> str:
        return f"localhost:{self.grpc_port}"

    def banner_commands(self, program: str) -> list[str]:
        """The indented example lines of the banner that start with `program `."""
        return [line.strip() for line in self.lines if line.startswith(f"  {program} ")]


def _read(demo: Demo) -> None:
    assert demo.process.stdout is not None
    for line in demo.process.stdout:
        demo.lines.append(line.rstrip("\n"))


def _wait_for_line(demo: Demo, pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(demo.lines):
            if match := re.search(pattern, line):
                return match
        if demo.process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(
        f"demo never printed {pattern!r}; output so far:\n" + "\n".join(demo.lines)
    )


async def _all_fresh(target: str, names: Sequence[str], timeout: float) -> None:
    async with DataLayerClient(target) as client:
        deadline = time.monotonic() + timeout
        while True:
            listing = await client.list_endpoints()
            got = sorted(ep.name for ep in listing.endpoints if not ep.stale)
            if got == sorted(names):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"demo endpoints not all fresh: {listing.endpoints}")
            await asyncio.sleep(0.1)


@contextmanager
def running_demo(*args: str) -> Iterator[Demo]:
    """Start `datalayer demo ARGS`, wait for its banner and three fresh pods; stop it after."""
    process = subprocess.Popen(
        [DATALAYER, "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    demo = Demo(process)
    threading.Thread(target=_read, args=(demo,), daemon=True).start()
    try:
        grpc = _wait_for_line(demo, r"gRPC on 127\.0\.0\.1:(\d+), metrics on .*:(\d+)/metrics", 30)
        demo.grpc_port, demo.metrics_port = int(grpc.group(1)), int(grpc.group(2))
        pods = _wait_for_line(demo, r"^mock pods \(app=vllm\): (.*)$", 5).group(1)
        demo.pod_ports = {
            name: int(port) for name, port in re.findall(r"(\S+) on http://[\d.]+:(\d+)", pods)
        }
        _wait_for_line(demo, r"Ctrl-C stops\.", 5)
        asyncio.run(_all_fresh(demo.target, list(demo.pod_ports), timeout=15))
        yield demo
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
