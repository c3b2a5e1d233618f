"""The README's demo examples, run as written against a real `datalayer demo` process.

The Python snippet and the `/control` curl lines are read from README.md, so the README and
these tests cannot drift apart; the grpcurl lines are run by tests/test_grpcurl.py. The demo
is started with its default ports, so when 9002, 9090 and 8000-8002 are free (the usual
case) every command runs exactly as written; when one is taken the demo picks another and
the command's port is swapped for the one the demo printed.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_process import Demo, running_demo

from datalayer.client import DataLayerClient
from datalayer.v1 import datalayer_pb2 as pb

README = Path(__file__).resolve().parent.parent / "README.md"
README_TARGET = "localhost:9002"
README_POD_PORTS = {"vllm-0": 8000, "vllm-1": 8001, "vllm-2": 8002}
README_GRPCURL_TARGET = README_TARGET

pytestmark = pytest.mark.slow


def readme_python_snippet(text: str) -> str:
    """The README's one ```python block (the client example)."""
    (snippet,) = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    return str(snippet)


def readme_curl_commands(text: str) -> list[str]:
    commands: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        commands += [line.strip() for line in block.splitlines() if line.startswith("curl ")]
    return commands


def on_demo(command: str, demo: Demo) -> str:
    """The README text with the README's ports swapped for the demo's (a no-op when free)."""
    command = command.replace(README_TARGET, demo.target)
    for name, port in README_POD_PORTS.items():
        command = command.replace(f"localhost:{port}/", f"localhost:{demo.pod_ports[name]}/")
    return command


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    # No injected faults: these tests break and heal pods themselves.
    with running_demo("--fault-every", "0") as running:
        yield running


def test_readme_python_snippet_is_a_complete_program() -> None:
    snippet = readme_python_snippet(README.read_text())
    compile(snippet, "README.md", "exec")
    assert "asyncio.run(main())" in snippet
    assert README_TARGET in snippet


def test_readme_python_snippet_runs_against_the_demo(demo: Demo, tmp_path: Path) -> None:
    script = tmp_path / "readme_snippet.py"
    script.write_text(on_demo(readme_python_snippet(README.read_text()), demo))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    first, best = result.stdout.splitlines()
    assert first == f"vllm-0 127.0.0.1 {demo.pod_ports['vllm-0']} fresh"
    assert re.fullmatch(r"least queued: vllm-[012] \d+", best), best


def test_demo_banner_prints_the_readme_commands(demo: Demo) -> None:
    readme = README.read_text()
    grpcurl = [line.strip() for line in re.findall(r"^grpcurl .*$", readme, flags=re.M)]
    assert demo.banner_commands("grpcurl") == [on_demo(line, demo) for line in grpcurl]
    printed = demo.banner_commands("curl")
    assert printed, demo.lines
    assert set(printed) <= {on_demo(line, demo) for line in readme_curl_commands(readme)}


async def _endpoint(target: str, name: str) -> pb.Endpoint:
    async with DataLayerClient(target) as client:
        return await client.get_endpoint(name)


def _until(what: str, check: object, demo: Demo, name: str, timeout: float = 10) -> pb.Endpoint:
    deadline = time.monotonic() + timeout
    while True:
        endpoint = asyncio.run(_endpoint(demo.target, name))
        if check(endpoint):  # type: ignore[operator]
            return endpoint
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} never showed {what}: {endpoint}")
        time.sleep(0.1)


def test_readme_control_curl_lines_against_the_demo(demo: Demo) -> None:
    commands = readme_curl_commands(README.read_text())
    outputs = {}
    for command in commands:
        argv = shlex.split(on_demo(command, demo))
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{command}: {result.stderr}"
        outputs[command] = json.loads(result.stdout)
        body = argv[argv.index("-d") + 1] if "-d" in argv else None
        after = outputs[command]
        if body is None:  # GET: the pod's current report
            assert after["pod"] == "vllm-0"
            assert {"waiting", "running", "kv_cache_usage", "overrides"} <= set(after)
            continue
        sent = json.loads(body)
        if "waiting" in sent:  # pinned load reaches the data layer
            assert (after["waiting"], after["running"]) == (3, 2)
            _until(
                "the pinned load",
                lambda ep: (
                    ep.metrics.waiting_queue_size == 3
                    and ep.metrics.running_requests_size == 2
                    and abs(ep.metrics.kv_cache_usage_percent - 0.25) < 1e-9
                ),
                demo,
                "vllm-0",
            )
        elif "running_lora" in sent:
            assert (after["running_lora"], after["waiting_lora"]) == (["sql-lora"], ["chat-lora"])
            _until(
                "the pinned adapters",
                lambda ep: (
                    list(ep.metrics.active_models) == ["sql-lora"]
                    and list(ep.metrics.waiting_models) == ["chat-lora"]
                ),
                demo,
                "vllm-1",
            )
        elif sent.get("fault") == "http500":
            assert after["fault"] == "http500"
            stale = _until("staleness", lambda ep: ep.stale, demo, "vllm-1")
            assert "500" in stale.last_error
        elif isinstance(sent.get("fault"), dict):
            assert after["fault"] == "slow"
        else:  # heal and unpin
            assert after["fault"] is None
            assert not any(after["overrides"].values()), after["overrides"]
            _until("fresh data again", lambda ep: not ep.stale, demo, "vllm-1")
    kinds = {tuple(sorted(json.loads(shlex.split(c)[-1]))) for c in commands if "-d" in c}
    assert ("fault",) in kinds, commands
    assert ("fault", "reset") in kinds, commands


def test_demo_on_a_taken_port_says_so_and_prints_the_port_it_got() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--grpc-port", str(port), "--metrics-port", "0", "--pod-port", "0"]
        with running_demo(*args, "--fault-every", "0") as demo:
            assert any(f"gRPC port {port} is in use" in line for line in demo.lines), demo.lines
            assert demo.grpc_port not in (0, port)
            listing = demo.banner_commands("grpcurl")
            assert listing[0] == f"grpcurl -plaintext localhost:{demo.grpc_port} list"
            result = subprocess.run(
                [str(Path(sys.executable).with_name("grpcurl")), *shlex.split(listing[0])[1:]],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 0, result.stderr
            assert "datalayer.v1.DataLayer" in result.stdout.split()


def test_readme_match_prefix_against_the_demo(demo: Demo) -> None:
    """The README's MatchPrefix line, run on the demo, gives the README's answer: vllm-0 holds
    the 3 blocks of the system prompt the demo keeps sending it (real KV events over ZMQ)."""
    readme = README.read_text()
    line = next(x for x in re.findall(r"^grpcurl .*$", readme, flags=re.M) if "MatchPrefix" in x)
    section = readme[readme.index("## Precise prefix-cache routing") :]
    expected = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    argv = shlex.split(on_demo(line, demo))
    argv[0] = str(Path(sys.executable).parent / "grpcurl")
    deadline = time.monotonic() + 30
    while True:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, result.stderr
        if json.loads(result.stdout) == expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert json.loads(result.stdout) == expected
