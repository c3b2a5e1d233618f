"""examples/go-scheduler: its Go tests, and the built program against a live service.

Skipped when the Go toolchain (Debian's packages, see scripts/install-go-toolchain) is not
installed, unless DATALAYER_REQUIRE_GO=1, when a missing toolchain is a failure (CI).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scheduler_scenarios import CONFIG, IDLE, PICK, told
from stack import Stack, running_stack

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "examples" / "go-scheduler" / "build.sh"
TOOLS = ("go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc")
# Debian's Go packages (GOPATH mode): grpc-go, protobuf-go and its 1.5 API line.
GOCODE = Path("/usr/share/gocode/src")
PACKAGES = ("google.golang.org/grpc", "google.golang.org/protobuf", "github.com/golang/protobuf")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None] + [
    str(GOCODE / package) for package in PACKAGES if not (GOCODE / package).is_dir()
]
REQUIRED = os.environ.get("DATALAYER_REQUIRE_GO") == "1"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING) and not REQUIRED,
        reason=f"Go toolchain not installed ({', '.join(MISSING)} missing): run "
        "scripts/install-go-toolchain, or set DATALAYER_REQUIRE_GO=1 to fail instead",
    ),
]

# The tests' stack, plus one custom metric: `metrics.custom["running"]` from the pods' page.


def require_toolchain() -> None:
    if MISSING:
        pytest.fail(f"DATALAYER_REQUIRE_GO=1 but {', '.join(MISSING)} not found")


@pytest.fixture(scope="module")
def go_scheduler(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example, built once per module from protos/ and the example's sources."""
    require_toolchain()
    out = tmp_path_factory.mktemp("go-scheduler")
    result = subprocess.run(
        [str(BUILD), str(out)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out / "go-scheduler"


def test_go_unit_tests_pass() -> None:
    require_toolchain()
    result = subprocess.run(
        [str(BUILD), "--test"], capture_output=True, text=True, timeout=300, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.findall(r"^--- PASS: (\w+)", output, re.M)
    assert "TestPickPrefersIdleAndNeverStale" in passed, output
    assert "TestMetricScoresMinimiseClampAndWorstCaseWhenMissing" in passed, output
    assert len(passed) >= 10, output
    assert "--- FAIL" not in output


def picks(lines: list[str]) -> list[tuple[str, str, list[str]]]:
    """(picked name, reason, candidate lines) for every pick the program printed."""
    found: list[tuple[str, str, list[str]]] = []
    for line in lines:
        match = PICK.match(line)
        if match:
            found.append((match.group(2), match.group(4), []))
        elif line.startswith("  ") and found:
            found[-1][2].append(line.strip())
    return found


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """Three mock pods and the service, exporting `running` into metrics.custom."""
    async with running_stack(tmp_path, CONFIG) as running:
        yield running


async def run_scheduler(binary: Path, stack: Stack, *args: str) -> list[str]:
    """Run the program to its end (bounded by -picks); return its lines."""
    process = await asyncio.create_subprocess_exec(
        str(binary),
        "-target",
        f"127.0.0.1:{stack.app.grpc_port}",
        "-selector",
        "app=vllm",
        "-interval",
        "50ms",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 20)
    output = stdout.decode()
    assert process.returncode == 0, output + stderr.decode()
    synced = r'synced: 3 endpoints at revision \d+ \(instance [0-9a-f]+\), selector "app=vllm"$'
    assert re.match(synced, output, re.M), output
    return output.splitlines()


async def test_picks_the_idle_pod_and_never_the_stale_one(stack: Stack, go_scheduler: Path) -> None:
    await told(stack, {0: IDLE, 1: {"waiting": 8, "running": 4, "kv_cache_usage": 0.9}}, stale=(2,))
    lines = await run_scheduler(
        go_scheduler, stack, "-custom-key", "running", "-custom-max", "8", "-picks", "3"
    )
    found = picks(lines)
    assert [name for name, _, _ in found] == ["pod-a"] * 3, lines
    for _, reason, candidates in found:
        assert reason == "best of 2; stale, skipped: pod-c"
        assert candidates == [
            "pod-a score=3.000 queue=1.000 (waiting=0) kv=1.000 (usage=0.000) "
            "metric=1.000 (running=0)",
            "pod-b score=0.600 queue=0.000 (waiting=8) kv=0.100 (usage=0.900) "
            "metric=0.500 (running=4)",
        ]


async def test_the_metric_scorer_decides_and_a_missing_key_is_the_worst_case(
    stack: Stack, go_scheduler: Path
) -> None:
    loads = {i: {**IDLE, "running": running} for i, running in enumerate((6, 2, 4))}
    await told(stack, loads)
    lines = await run_scheduler(
        go_scheduler, stack, "-custom-key", "running", "-custom-max", "8", "-picks", "1"
    )
    ((name, reason, candidates),) = picks(lines)
    assert (name, reason) == ("pod-b", "best of 3")
    assert [c.split()[0] for c in candidates] == ["pod-b", "pod-c", "pod-a"]
    assert candidates[0].endswith("metric=0.750 (running=2)")
    # A key no pod exports: every pod gets the worst case, so the metric decides nothing.
    lines = await run_scheduler(
        go_scheduler, stack, "-custom-key", "not_exported", "-custom-max", "8", "-picks", "1"
    )
    ((name, reason, candidates),) = picks(lines)
    assert (name, reason) == ("pod-a", "best of 3")
    missing = "metric=0.000 (not_exported missing, worst case 8)"
    assert all(c.endswith(missing) for c in candidates), candidates


async def read_until(stream: asyncio.StreamReader, pattern: str, seen: list[str]) -> re.Match[str]:
    while True:
        line = (await stream.readline()).decode()
        if not line:
            raise AssertionError("go-scheduler ended; it printed:\n" + "".join(seen))
        seen.append(line)
        match = re.match(pattern, line)
        if match:
            return match


@pytest.fixture
async def running_scheduler(
    stack: Stack, go_scheduler: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        str(go_scheduler),
        "--target",
        f"127.0.0.1:{stack.app.grpc_port}",
        "--selector",
        "app=vllm",
        "--interval",
        "50ms",
        "--duration",
        "20s",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_follows_the_watch_stream_as_load_moves_and_pods_go_stale(
    stack: Stack, running_scheduler: asyncio.subprocess.Process
) -> None:
    process = running_scheduler
    stdout = process.stdout
    assert stdout is not None
    seen: list[str] = []

    async def next_pick(pattern: str) -> re.Match[str]:
        return await asyncio.wait_for(read_until(stdout, pattern, seen), 10)

    await stack.control(0, {"waiting": 6, "kv_cache_usage": 0.8})
    await next_pick(r"pick \d+: pod-b ")  # pod-a busy: pod-b (first of the idle ones) wins
    await stack.control(0, {"reset": True})
    await stack.control(1, {"waiting": 6, "kv_cache_usage": 0.8})
    await stack.control(2, {"waiting": 9, "kv_cache_usage": 0.95})
    await next_pick(r"pick \d+: pod-a ")  # the load moved: so does the pick
    await stack.pods[0].close()
    await next_pick(r"pick \d+: pod-b .*\(best of 2; stale, skipped: pod-a\)$")
    await stack.pods[1].close()
    await stack.pods[2].close()
    # All stale: scored on their last data all the same, where pod-a was idle.
    await next_pick(r"pick \d+: pod-a .*\(best of 3; all stale, scored anyway\)$")
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 10) == 0
    assert not any(re.match(r"pick \d+: none", line) for line in seen)
