"""examples/python_scheduler: its scorers, and the program against a live service."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from types import ModuleType

import pytest

from datalayer.v1 import datalayer_pb2 as pb

from scheduler_scenarios import BUSY, CONFIG, IDLE, PICK, told
from stack import Stack, eventually, running_stack

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "python_scheduler" / "scheduler.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("python_scheduler", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


sched = _load()


def ep(
    name: str,
    waiting: int | None = 0,
    kv: float | None = 0.0,
    stale: bool = False,
    custom: Mapping[str, float] | None = None,
) -> pb.Endpoint:
    """An endpoint as the service sends it; None leaves a typed field absent (not read)."""
    metrics = pb.Metrics(custom=dict(custom or {}))
    if waiting is not None:
        metrics.waiting_queue_size = waiting
    if kv is not None:
        metrics.kv_cache_usage_percent = kv
    return pb.Endpoint(name=name, stale=stale, metrics=metrics)


def test_queue_scores_are_min_max_normalised() -> None:
    assert sched.queue_scores([ep("a", 0), ep("b", 5), ep("c", 10)]) == [1.0, 0.5, 0.0]
    assert sched.queue_scores([ep("a", 3), ep("b", 3)]) == [1.0, 1.0]
    assert sched.queue_scores([]) == []


def test_kv_cache_scores_are_one_minus_usage() -> None:
    assert sched.kv_cache_scores([ep("a", kv=0.0), ep("b", kv=0.25), ep("c", kv=1.0)]) == [
        1.0,
        0.75,
        0.0,
    ]


def test_absent_fields_score_as_the_worst_case() -> None:
    # An absent queue scores 0 and takes no part in the min-max range of the known ones.
    assert sched.queue_scores([ep("a", None), ep("b", 2), ep("c", 6)]) == [0.0, 1.0, 0.0]
    assert sched.queue_scores([ep("a", None), ep("b", 3)]) == [0.0, 1.0]
    assert sched.queue_scores([ep("a", None), ep("b", None)]) == [0.0, 0.0]
    assert sched.kv_cache_scores([ep("a", kv=None), ep("b", kv=0.25)]) == [0.0, 0.75]


def test_an_absent_queue_never_wins_over_a_known_small_queue() -> None:
    """Read as 0 (proto3's default), the unread pod would be the best one there is."""
    decision = sched.pick(
        [ep("a-unread", waiting=None), ep("b-queue-5", waiting=5)], sched.Config()
    )
    assert decision.pick == "b-queue-5"
    assert [s.waiting for s in decision.ranked] == [5, None]
    decision = sched.pick([ep("a-unread", kv=None), ep("b-half-full", kv=0.5)], sched.Config())
    assert decision.pick == "b-half-full"
    # Nothing known at all about one pod: the other, busy as it is, still wins.
    decision = sched.pick([ep("a-unread", None, None), ep("b-busy", 9, 0.9)], sched.Config())
    assert decision.pick == "b-busy"
    lines = sched.format_decision(1, decision, sched.Config())
    assert lines[2] == (
        "  a-unread score=0.000 queue=0.000 (waiting absent, worst case) "
        "kv=0.000 (usage absent, worst case)"
    )


def test_a_disconnected_mirror_is_named_in_the_pick() -> None:
    decision = sched.pick([ep("a", None, None, stale=True)], sched.Config())
    decision.unreachable_for = 2.5
    line = sched.format_decision(3, decision, sched.Config())[0]
    assert line == (
        "pick 3: a score=0.000 (best of 1; all stale, scored anyway; "
        "data layer unreachable for 2.5s)"
    )


def test_metric_scores_clamp_and_use_the_worst_case_when_missing() -> None:
    config = sched.Config(metric_key="latency", metric_min=0, metric_max=10)
    endpoints = [
        ep("low", custom={"latency": 2}),
        ep("high", custom={"latency": 8}),
        ep("over", custom={"latency": 50}),
        ep("under", custom={"latency": -3}),
        ep("missing", custom={"other": 0}),
    ]
    assert sched.metric_scores(endpoints, config) == pytest.approx([0.8, 0.2, 0, 1, 0])
    assert sched.metric_value(endpoints[4], config) == (10, False)
    maximize = sched.Config(metric_key="hits", metric_max=4, metric_mode=sched.MAXIMIZE)
    scores = sched.metric_scores([ep("a", custom={"hits": 3}), ep("b")], maximize)
    assert scores == pytest.approx([0.75, 0])
    assert sched.metric_value(ep("b"), maximize) == (0, False)


def test_config_validation() -> None:
    sched.Config().validate()
    with pytest.raises(ValueError, match="must be greater than"):
        sched.Config(metric_key="x", metric_min=1, metric_max=1).validate()
    with pytest.raises(ValueError, match="metric mode"):
        sched.Config(metric_mode="sideways").validate()


def test_pick_prefers_the_idle_pod_and_skips_stale_ones() -> None:
    decision = sched.pick(
        [ep("busy", 8, 0.9), ep("idle", 0, 0.1), ep("gone", 0, 0.0, stale=True)], sched.Config()
    )
    assert decision.pick == "idle"
    assert [s.name for s in decision.ranked] == ["idle", "busy"]
    assert decision.ranked[0].total == pytest.approx(1.9)
    assert decision.skip_stale == ["gone"]
    lines = sched.format_decision(4, decision, sched.Config())
    assert lines[0] == "pick 4: idle score=1.900 (best of 2; stale, skipped: gone)"


def test_pick_when_all_are_stale_ties_and_weights() -> None:
    decision = sched.pick(
        [ep("a", 4, 0.5, stale=True), ep("b", 1, 0.5, stale=True)], sched.Config()
    )
    assert (decision.pick, decision.all_stale) == ("b", True)
    assert "all stale, scored anyway" in sched.format_decision(1, decision, sched.Config())[0]
    assert sched.pick([ep("b"), ep("a")], sched.Config()).pick == "a"  # a tie: first name
    endpoints = [ep("a", 10, 0.0), ep("b", 0, 0.6)]
    assert sched.pick(endpoints, sched.Config(kv_weight=3)).pick == "a"
    assert sched.pick(endpoints, sched.Config(queue_weight=3)).pick == "b"
    assert sched.format_decision(2, sched.pick([], sched.Config()), sched.Config()) == [
        "pick 2: none (no endpoints)"
    ]


def test_the_metric_scorer_decides_when_load_is_equal() -> None:
    config = sched.Config(metric_key="ttft", metric_max=2)
    decision = sched.pick(
        [ep("a-missing"), ep("b-slow", custom={"ttft": 1.5}), ep("c-fast", custom={"ttft": 0.5})],
        config,
    )
    assert [s.name for s in decision.ranked] == ["c-fast", "b-slow", "a-missing"]
    lines = sched.format_decision(1, decision, config)
    assert lines[1].endswith("metric=0.750 (ttft=0.5)")
    assert lines[3] == (
        "  a-missing score=2.000 queue=1.000 (waiting=0) kv=1.000 (usage=0.000) "
        "metric=0.000 (ttft missing, worst case 2)"
    )


# The tests' stack, plus one custom metric: `metrics.custom["running"]` from the pods' page.
RUNNING = sched.Config(metric_key="running", metric_max=8)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """Three mock pods and the service, exporting `running` into metrics.custom."""
    async with running_stack(tmp_path, CONFIG) as running:
        yield running


def parse(output: str) -> list[tuple[str, str, list[str]]]:
    """(picked name, reason, candidate lines) per pick, after checking the synced line."""
    lines = output.splitlines()
    synced = r'synced: 3 endpoints at revision \d+ \(instance [0-9a-f]+\), selector "app=vllm"$'
    assert re.match(synced, lines[0]), output
    found: list[tuple[str, str, list[str]]] = []
    for line in lines[1:]:
        match = PICK.match(line)
        if match:
            found.append((match.group(2), match.group(4), []))
        else:
            assert line.startswith("  "), output
            found[-1][2].append(line.strip())
    return found


def check_idle_pod_picked(output: str, count: int) -> None:
    found = parse(output)
    assert [name for name, _, _ in found] == ["pod-a"] * count, output
    for _, reason, candidates in found:
        assert reason == "best of 2; stale, skipped: pod-c"
        assert candidates == [
            "pod-a score=3.000 queue=1.000 (waiting=0) kv=1.000 (usage=0.000) "
            "metric=1.000 (running=0)",
            "pod-b score=0.600 queue=0.000 (waiting=8) kv=0.100 (usage=0.900) "
            "metric=0.500 (running=4)",
        ]


async def run(stack: Stack, config: sched.Config, picks: int) -> str:
    out = io.StringIO()
    target = f"127.0.0.1:{stack.app.grpc_port}"
    code = await sched.run(target, config, selector="app=vllm", picks=picks, interval=0.05, out=out)
    assert code == 0
    return out.getvalue()


async def test_run_picks_the_idle_pod_and_never_the_stale_one(stack: Stack) -> None:
    await told(stack, {0: IDLE, 1: BUSY}, stale=(2,))
    check_idle_pod_picked(await run(stack, RUNNING, picks=3), 3)


async def test_the_metric_scorer_decides_and_a_missing_key_is_the_worst_case(
    stack: Stack,
) -> None:
    await told(stack, {i: {**IDLE, "running": r} for i, r in enumerate((6, 2, 4))})
    ((name, reason, candidates),) = parse(await run(stack, RUNNING, picks=1))
    assert (name, reason) == ("pod-b", "best of 3")
    assert [c.split()[0] for c in candidates] == ["pod-b", "pod-c", "pod-a"]
    assert candidates[0].endswith("metric=0.750 (running=2)")
    # A key no pod exports: every pod gets the worst case, so the metric decides nothing.
    config = sched.Config(metric_key="not_exported", metric_max=8)
    ((name, reason, candidates),) = parse(await run(stack, config, picks=1))
    assert (name, reason) == ("pod-a", "best of 3")
    missing = "metric=0.000 (not_exported missing, worst case 8)"
    assert all(c.endswith(missing) for c in candidates), candidates


@pytest.mark.slow
async def test_the_script_runs_as_documented(stack: Stack) -> None:
    await told(stack, {0: IDLE, 1: BUSY}, stale=(2,))
    # The service runs in this event loop: the script must run without blocking it.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--target",
        f"127.0.0.1:{stack.app.grpc_port}",
        "--selector",
        "app=vllm",
        "--custom-key",
        "running",
        "--custom-max",
        "8",
        "--picks",
        "2",
        "--interval",
        "100ms",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    check_idle_pod_picked(stdout.decode(), 2)


def last_pick(text: str) -> str:
    """The last complete `pick N: NAME score=... (reason)` line printed so far."""
    lines = re.findall(r"^pick \d+: .*$", text, re.M)
    return lines[-1] if lines else ""


async def test_run_follows_the_stream_as_load_moves_and_pods_go_stale(stack: Stack) -> None:
    out = io.StringIO()
    target = f"127.0.0.1:{stack.app.grpc_port}"
    task = asyncio.create_task(
        sched.run(target, sched.Config(), selector="app=vllm", duration=20, interval=0.05, out=out)
    )

    def picks(pattern: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            assert not task.done(), out.getvalue()
            return re.match(pattern, last_pick(out.getvalue())) is not None

        return check

    try:
        await stack.control(0, {"waiting": 6, "kv_cache_usage": 0.8})
        # pod-a busy: pod-b, the first of the two idle ones, wins.
        await eventually(picks(r"pick \d+: pod-b "), timeout=10, what="a pick of pod-b")
        await stack.control(1, {"waiting": 6, "kv_cache_usage": 0.8})
        await stack.control(2, {"waiting": 9, "kv_cache_usage": 0.95})
        await stack.control(0, {"reset": True})
        await eventually(picks(r"pick \d+: pod-a "), timeout=10, what="the pick to follow")
        await stack.pods[0].close()
        skipped = r"pick \d+: pod-b .*\(best of 2; stale, skipped: pod-a\)$"
        await eventually(picks(skipped), timeout=10, what="pod-a skipped as stale")
        await stack.pods[1].close()
        await stack.pods[2].close()
        # All stale: scored on their last data all the same, where pod-a was idle.
        all_stale = r"pick \d+: pod-a .*\(best of 3; all stale, scored anyway\)$"
        await eventually(picks(all_stale), timeout=10, what="a pick among all-stale pods")
        assert "none (no endpoints)" not in out.getvalue()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
