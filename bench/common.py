"""Shared by the benchmarks: a table printer, JSON output, and the machine description."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "out"


def machine() -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {
            name: _version(name)
            for name in (
                "grpcio",
                "protobuf",
                "aiohttp",
                "httptools",
                "uvloop",
                "prometheus-client",
            )
        },
    }


def _version(name: str) -> str:
    try:
        return version(name)
    except Exception:
        return "not installed"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n## {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")


def write_json(name: str, results: dict[str, Any]) -> Path:
    OUT_DIR.mkdir(exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **results}, indent=2))
    return path


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size of a process (this one by default), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


async def start_mock_pods(
    count: int, processes: int = 1, host: str = "127.0.0.1", extra: Sequence[str] = ()
) -> tuple[list[asyncio.subprocess.Process], list[int]]:
    """`count` mock pods (`datalayer mock-pod`) spread over `processes` processes; their ports."""
    datalayer = str(Path(sys.executable).with_name("datalayer"))
    procs: list[asyncio.subprocess.Process] = []
    ports: list[int] = []
    per = -(-count // processes)
    for first in range(0, count, per):
        n = min(per, count - first)
        argv = [datalayer, "mock-pod", "--host", host, "--port", "0", "--count", str(n)]
        argv += ["--name", f"bench{first}", "--log-level", "warning", *extra]
        process = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE)
        procs.append(process)
        assert process.stdout is not None
        while len(ports) < first + n:
            line = (await process.stdout.readline()).decode()
            if not line:
                raise RuntimeError("mock pods exited before starting")
            match = re.search(r"on http://[0-9.]+:(\d+)", line)
            if match:
                ports.append(int(match.group(1)))
    return procs, ports
