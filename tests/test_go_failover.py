"""examples/go-scheduler against a replica group: `-target a,b` is one connection over both
replicas (pick_first); kill -9 the one it streams from, and it keeps picking from the other,
with every endpoint fresh again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from cluster_stack import pod_process, replica_group
from test_cluster import wait_converged
from test_go_scheduler import go_scheduler, pytestmark  # noqa: F401 - the fixture, the skip

from scheduler_scenarios import PICK

PODS = 6


async def test_go_scheduler_fails_over_to_the_other_replica(
    tmp_path: Path,
    go_scheduler: Path,  # noqa: F811 - the imported fixture
) -> None:
    async with pod_process(PODS) as pods, replica_group(tmp_path, pods, 2) as replicas:
        await wait_converged(replicas, count=PODS)
        victim, survivor = replicas
        process = await asyncio.create_subprocess_exec(
            str(go_scheduler),
            "-target",
            f"{victim.target},{survivor.target}",
            "-interval",
            "100ms",
            "-duration",
            "6s",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        lines: list[str] = []
        while not any(line.startswith("synced:") for line in lines):
            lines.append((await asyncio.wait_for(process.stdout.readline(), 10)).decode())
        await asyncio.sleep(0.5)
        await victim.kill()
        await asyncio.sleep(2.5)  # the survivor has taken pod-0 over if it was the victim's
        # A change only the survivor can tell it about: the pick lines show it once the
        # scheduler's stream has moved there.
        url = f"http://127.0.0.1:{pods.ports['pod-0']}/control"
        async with aiohttp.ClientSession() as session, session.post(url, json={"waiting": 50}):
            pass
        stdout, stderr = await asyncio.wait_for(process.communicate(), 20)
        lines += stdout.decode().splitlines()
        assert process.returncode == 0, "".join(lines) + stderr.decode()
        assert "reconnecting" in stderr.decode()
        reasons = [m.group(4) for line in lines if (m := PICK.match(line))]
        last = max(i for i, line in enumerate(lines) if PICK.match(line))
        candidates = [line.strip() for line in lines[last + 1 :] if line.startswith("  ")]
        assert any(c.startswith("pod-0 ") and "(waiting=50)" in c for c in candidates), lines[last:]
        # After the failover (and the survivors' takeover), picks are from all fresh pods.
        assert len(reasons) > 20, lines
        assert all(reason == f"best of {PODS}" for reason in reasons[-5:]), reasons[-10:]
