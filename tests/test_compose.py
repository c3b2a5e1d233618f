"""docker-compose.yaml for real: built, started, checked, stopped, with Docker Engine.

The stack runs with docker-compose.test.yaml on top: every service on the host's network,
bound to 127.0.0.1 on its own port, so no traffic goes anywhere else. The test

- starts a dockerd of its own if none answers (tests/dockerd.py: no iptables, no bridge)
  and stops it afterwards;
- builds the base image with debootstrap from the machine's Debian mirror (no image
  registry is reachable), cached under /var/cache/datalayer-test, then the project's image
  through compose's `build:` with `BASE_IMAGE` set to it;
- checks what each service serves: every container healthy; the data layer lists the four
  pods (vLLM, vLLM with LoRA adapters, a two-engine vLLM, SGLang) over gRPC with fresh
  metrics that follow load set on the pods; the scheduler container's picks follow it too;
  a second data layer finds the `vllm` pod with dns-discovery (`localhost` in a container);
- `docker compose down`s everything and checks that no container is left.

Not exercised: compose's DNS and `--scale` (docker-compose.yaml's default discovery). Host
networking has neither, and the test sends no traffic to a bridge network's addresses.
`test_compose_files_are_wired` checks that wiring statically (and runs without Docker);
tests/test_dns_discovery.py tests the plugin against a real DNS server whose answer set
changes, which is what a scale-up looks like to it.

Where Docker cannot run, the Docker tests skip and say why, unless DATALAYER_REQUIRE_DOCKER=1
(as in CI), which turns the skip into a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import aiohttp
import pytest
import yaml

from datalayer.client import DataLayerClient
from datalayer.config import load_config_file
from datalayer.registry import default_registry
from datalayer.v1 import datalayer_pb2 as pb

from dockerd import (
    Daemon,
    DockerUnavailable,
    base_image,
    compose_cli,
    docker_daemon,
    exclusive,
    pip_base_image,
    ports_in_use,
)
from stack import eventually

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILES = ("docker-compose.yaml", "docker-compose.test.yaml")
PROJECT = "datalayer-compose-test"
IMAGE = "datalayer:compose-test"
REQUIRED = os.environ.get("DATALAYER_REQUIRE_DOCKER") == "1"

# docker-compose.test.yaml's ports, all on 127.0.0.1.
GRPC, GRPC_DNS, METRICS = 28002, 28003, 28090
PODS = {"vllm": 28100, "vllm-lora": 28101, "vllm-qwen": 28102, "sglang": 28103}
SERVICES = {"datalayer", "datalayer-dns", "scheduler", *PODS}

# Load the test sets on the pods through their /control endpoint, and what the data layer
# must then report. With it the scheduler's best pick is vllm-lora (shortest queue, idle KV).
LOAD = {
    "vllm": {"waiting": 2},
    "vllm-lora": {"running_lora": ["sql-lora"]},
    "vllm-qwen": {"waiting": 6},
    "sglang": {"kv_cache_usage": 0.5},
}
PICK = re.compile(r"^pick (\d+): (\S+) score=([\d.]+) \(best of (\d+)")


@dataclass
class Running:
    daemon: Daemon
    compose: list[str]
    env: dict[str, str]
    workdir: Path

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        command = [*self.compose, *args]
        result = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=self.env
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{shlex.join(command)} exited {result.returncode}:\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result.stdout + result.stderr

    def services(self) -> dict[str, dict[str, str]]:
        """`compose ps --format json` by service (one JSON object per line, or a list)."""
        out = self.run("ps", "--all", "--format", "json").strip()
        rows = json.loads(out) if out.startswith("[") else [json.loads(x) for x in out.split("\n")]
        return {row["Service"]: row for row in rows if row}

    def logs(self, service: str, check: bool = True) -> str:
        return self.run("logs", "--no-color", "--no-log-prefix", service, check=check)


def unavailable(reason: str) -> NoReturn:
    message = f"Docker cannot run the compose test here: {reason}"
    if REQUIRED:
        pytest.fail(f"DATALAYER_REQUIRE_DOCKER=1 but {message}", pytrace=False)
    pytest.skip(f"{message} (DATALAYER_REQUIRE_DOCKER=1 makes this a failure)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The compose stack, up and healthy; down (and the test's dockerd stopped) afterwards."""
    workdir = tmp_path_factory.mktemp("compose")
    with contextlib.ExitStack() as cleanup:
        cleanup.enter_context(exclusive("datalayer-compose-test"))
        timings: dict[str, float] = {}
        started = time.monotonic()
        try:
            compose = compose_cli()
            daemon = cleanup.enter_context(docker_daemon(workdir / "dockerd.log"))
            timings["dockerd"] = time.monotonic() - started
            base = base_image(daemon, workdir / "debootstrap.log")
            timings["base image"] = time.monotonic() - started - timings["dockerd"]
            pip_base = pip_base_image(daemon, base, workdir)
        except DockerUnavailable as exc:
            unavailable(str(exc))
        env = daemon.env(BASE_IMAGE=pip_base, DATALAYER_IMAGE=IMAGE)
        env.pop("DATALAYER_CONFIG", None)
        running = Running(daemon, [*compose, "-p", PROJECT, *_files()], env, workdir)
        running.run("down", "--volumes", "--remove-orphans", "--timeout", "5")  # leftovers
        busy = ports_in_use([GRPC, GRPC_DNS, METRICS, *PODS.values()])
        assert not busy, f"ports {busy} on 127.0.0.1 are taken: the stack needs them"
        mark = time.monotonic()
        build = running.run("build", "--progress", "plain", "datalayer", timeout=900)
        (workdir / "build.log").write_text(build)
        timings["image build"] = time.monotonic() - mark
        if daemon.own:  # bound the test's own data root; never prune someone else's daemon
            daemon.docker("image", "prune", "--force", check=False)
            daemon.docker("builder", "prune", "--force", "--keep-storage", "2GB", check=False)
        mark = time.monotonic()
        cleanup.callback(_down, running)
        try:
            running.run(
                "up", "--detach", "--no-build", "--wait", "--wait-timeout", "180", timeout=300
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_diagnose(running)}") from None
        timings["up, all healthy"] = time.monotonic() - mark
        timings["total"] = time.monotonic() - started
        print("compose test setup:", ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
        yield running
    if daemon.own and daemon.pid is not None:
        assert not Path(f"/proc/{daemon.pid}").exists(), f"dockerd {daemon.pid} still runs"


def _files() -> list[str]:
    return [arg for name in COMPOSE_FILES for arg in ("-f", str(ROOT / name))]


def _down(running: Running) -> None:
    running.run("down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=180)
    left = running.daemon.docker(
        "ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={PROJECT}"
    ).stdout.split()
    assert not left, f"containers left after `compose down`: {left}"


def _diagnose(running: Running) -> str:
    parts = [running.run("ps", "--all", check=False)]
    for service in sorted(SERVICES):
        parts.append(f"--- {service}\n" + running.logs(service, check=False)[-1500:])
    return "\n".join(parts)


async def _apply_load() -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for pod, body in LOAD.items():
            async with session.post(f"http://127.0.0.1:{PODS[pod]}/control", json=body) as r:
                assert r.status == 200, await r.text()


def _fresh(endpoint: pb.Endpoint, within: float = 3.0) -> bool:
    age = time.time() - endpoint.metrics.update_time.ToMicroseconds() / 1e6
    return not endpoint.stale and not endpoint.last_error and age < within


def test_compose_files_are_wired() -> None:
    """Without Docker: what the stack's files promise one another."""
    base = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    test = yaml.load((ROOT / "docker-compose.test.yaml").read_text(), Loader=_ComposeLoader)
    services = base["services"]
    assert set(services) == SERVICES - {"datalayer-dns"}
    for name, service in {**services, **test["services"]}.items():
        assert "healthcheck" in service or "healthcheck" in services.get(name, {}), name

    # Default: dns-discovery of `vllm`, port 8000, which the vLLM pods answer to.
    registry = default_registry()
    config = load_config_file(ROOT / "deploy/compose/config.yaml", registry)
    assert config.discovery is not None
    assert config.discovery.type_name == "dns-discovery"
    params = config.discovery.params
    assert (params.hostname, params.port) == ("vllm", 8000)  # type: ignore[attr-defined]
    for name in ("vllm-lora", "vllm-qwen"):
        assert "vllm" in services[name]["networks"]["default"]["aliases"], name
    for name in PODS:
        command = services[name]["command"]
        assert command[command.index("--port") + 1] == "8000", name
    assert (
        services["sglang"]["command"][services["sglang"]["command"].index("--engine-type") + 1]
        == "sglang"
    )
    assert "--lora" in services["vllm-lora"]["command"]
    assert "BASE_IMAGE" in services["datalayer"]["build"]["args"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim\n" in dockerfile

    # The file alternative lists every pod, each with its engine label.
    config = load_config_file(ROOT / "deploy/compose/config-file.yaml", registry)
    endpoints = yaml.safe_load((ROOT / "deploy/compose/endpoints.yaml").read_text())["endpoints"]
    assert {e["name"] for e in endpoints} == set(PODS)

    # The override: host network, 127.0.0.1, one port per service, matching the endpoints.
    ports: list[str] = []
    for name, service in test["services"].items():
        assert service["network_mode"] == "host", name
        command = service["command"]
        if "--host" in command:
            assert command[command.index("--host") + 1] == "127.0.0.1", name
        for flag in ("--port", "--grpc-port", "--metrics-port"):
            if flag in command and command[command.index(flag) + 1] != "-1":
                ports.append(command[command.index(flag) + 1])
    assert len(ports) == len(set(ports)) == len(PODS) + 3, ports
    assert {int(p) for p in ports} == {GRPC, GRPC_DNS, METRICS, *PODS.values()}
    test_endpoints = yaml.safe_load((ROOT / "deploy/compose/test/endpoints.yaml").read_text())
    assert {(e["name"], e["address"], e["port"]) for e in test_endpoints["endpoints"]} == {
        (name, "127.0.0.1", port) for name, port in PODS.items()
    }
    for name in ("config.yaml", "config-dns.yaml"):
        load_config_file(ROOT / "deploy/compose/test" / name, registry)

    # Compose itself accepts both files, alone and merged (it needs no daemon for that).
    try:
        compose = compose_cli()
    except DockerUnavailable as exc:
        if REQUIRED:
            raise
        pytest.skip(f"files checked; compose itself not run: {exc}")
    for files in (COMPOSE_FILES[:1], COMPOSE_FILES):
        command = [*compose, *(arg for name in files for arg in ("-f", name)), "config", "-q"]
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (command, result.stderr)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_service_is_up_and_healthy(stack: Running) -> None:
    services = stack.services()
    assert set(services) == SERVICES, services
    for name, row in services.items():
        assert row["State"] == "running", (name, row)
        assert row["Health"] == "healthy", (name, row)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_data_layer_serves_every_pod_with_fresh_metrics(stack: Running) -> None:
    async with DataLayerClient(f"127.0.0.1:{GRPC}") as client:
        listed = await client.list_endpoints(selector="app=vllm")
        endpoints = {ep.name: ep for ep in listed.endpoints}
        assert set(endpoints) == set(PODS)
        for name, ep in endpoints.items():
            assert (ep.address, ep.port) == ("127.0.0.1", PODS[name])
            assert _fresh(ep), ep
        assert endpoints["sglang"].labels["llm-d.ai/engine-type"] == "sglang"
        # SGLang's geometry comes from sglang:cache_config_info's page labels.
        assert endpoints["sglang"].metrics.cache_num_blocks > 0
        assert endpoints["vllm-lora"].metrics.max_active_models == 2

        await _apply_load()

        async def loaded() -> bool:
            eps = {ep.name: ep for ep in (await client.list_endpoints("app=vllm")).endpoints}
            return (
                all(_fresh(ep) for ep in eps.values())
                and eps["vllm"].metrics.waiting_queue_size == 2
                and eps["vllm-qwen"].metrics.waiting_queue_size == 6  # summed over 2 engines
                and list(eps["vllm-lora"].metrics.active_models) == ["sql-lora"]
                and abs(eps["sglang"].metrics.kv_cache_usage_percent - 0.5) < 1e-6
            )

        await eventually(loaded, timeout=10, what="the pods' load in the data layer")


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_scheduler_container_picks_follow_the_load(stack: Running) -> None:
    await _apply_load()

    async def picked_vllm_lora() -> bool:
        picks = [PICK.match(line) for line in stack.logs("scheduler").splitlines()]
        return any(m and m.group(2) == "vllm-lora" and m.group(4) == "4" for m in picks)

    await eventually(picked_vllm_lora, timeout=20, what="a pick of vllm-lora in the logs")
    lines = stack.logs("scheduler").splitlines()
    assert lines[0].startswith("synced: 4 endpoints"), lines[:3]
    picks = [m for m in map(PICK.match, lines) if m]
    assert len(picks) >= 2, lines[-20:]
    assert [int(m.group(1)) for m in picks] == list(range(1, len(picks) + 1))
    # The candidates under the last pick show the load the pods were given.
    last = len(lines) - 1 - [bool(PICK.match(x)) for x in reversed(lines)].index(True)
    candidates = "\n".join(lines[last + 1 : last + 5])
    assert "vllm-qwen score=1.000 queue=0.000 (waiting=6)" in candidates, lines[last:]
    assert "sglang score=1.500 queue=1.000 (waiting=0) kv=0.500" in candidates, lines[last:]


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_dns_discovery_in_a_container(stack: Running) -> None:
    await _apply_load()
    async with DataLayerClient(f"127.0.0.1:{GRPC_DNS}") as client:

        async def found() -> bool:
            eps = list((await client.list_endpoints()).endpoints)
            return (
                [(ep.name, ep.address, ep.port) for ep in eps]
                == [("localhost-127.0.0.1", "127.0.0.1", PODS["vllm"])]
                and _fresh(eps[0])
                and eps[0].metrics.waiting_queue_size == LOAD["vllm"]["waiting"]
            )

        await eventually(found, timeout=10, what="the vllm pod through dns-discovery")


class _ComposeLoader(yaml.SafeLoader):
    """Reads compose's `!reset` / `!override` tags as the plain value they carry."""


for _tag in ("!reset", "!override"):
    _ComposeLoader.add_constructor(
        _tag,
        lambda loader, node: (
            loader.construct_sequence(node)
            if isinstance(node, yaml.SequenceNode)
            else loader.construct_mapping(node)
            if isinstance(node, yaml.MappingNode)
            else loader.construct_scalar(node)
        ),
    )
