"""MatchPrefix over real gRPC: a running DataLayerApp, real ZMQ publishers, a grpc.aio client.

The pods are KvEventPublishers on 127.0.0.2.. (one port, as pods on their own
IPs); file discovery lists them; the config wires kv-events-data-source ->
kv-block-index. Also: the status codes for no index and for bad input.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import json
import os
import shlex
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
import zmq.asyncio

from datalayer.config import load_config_text
from datalayer.registry import default_registry
from datalayer.v1 import datalayer_pb2 as pb
from datalayer.v1 import datalayer_pb2_grpc as pb_grpc
from mockpod.kv_events import BlockCache, KvEventPublisher
from plugins.sources.kv_events.wire import stored_event
from server.app import DataLayerApp, ServeOptions

from stack import eventually, free_port

CONFIG = """\
plugins:
- type: kv-events-data-source
  parameters: {{port: {port}}}
- type: kv-block-index
  parameters: {{blockSize: 16}}
- type: file-discovery
  parameters: {{path: {endpoints}, pollInterval: 50ms}}
dataLayer:
  sources:
  - pluginRef: kv-events-data-source
    extractors: [{{pluginRef: kv-block-index}}]
  discovery: {{pluginRef: file-discovery}}
"""

NO_INDEX = """\
plugins:
- type: metrics-data-source
- type: core-metrics-extractor
- type: file-discovery
  parameters: {{path: {endpoints}}}
dataLayer:
  sources:
  - pluginRef: metrics-data-source
    extractors: [{{pluginRef: core-metrics-extractor}}]
  discovery: {{pluginRef: file-discovery}}
"""

MODEL = "mock-model"
GRPCURL = Path(sys.executable).parent / "grpcurl"
PODS = {
    "pod-a": ("127.0.0.2", "blue"),
    "pod-b": ("127.0.0.3", "green"),
    "pod-c": ("127.0.0.4", "blue"),
}


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, config: str, port: int
) -> AsyncIterator[tuple[DataLayerApp, Any]]:
    endpoints = tmp_path / "endpoints.yaml"
    entries = [
        {"name": name, "address": host, "port": 8000, "labels": {"color": color}}
        for name, (host, color) in PODS.items()
    ]
    endpoints.write_text(yaml.safe_dump({"endpoints": entries}))
    loaded = load_config_text(
        config.format(port=port, endpoints=endpoints), default_registry(), file="t.yaml"
    )
    app = DataLayerApp(loaded, ServeOptions(grpc_host="127.0.0.1", grpc_port=0, metrics_port=0))
    await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    stub = pb_grpc.DataLayerStub(channel)
    stub._target = f"127.0.0.1:{app.grpc_port}"  # for tests that run grpcurl against it
    try:
        yield app, stub
    finally:
        await channel.close()
        await app.stop()


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[Any, dict[str, KvEventPublisher]]]:
    context = zmq.asyncio.Context()
    port = free_port()
    pubs = {
        name: KvEventPublisher(context, host=host, port=port, topic=f"kv@{host}@{MODEL}")
        for name, (host, _) in PODS.items()
    }
    async with serving(tmp_path, CONFIG, port) as (app, stub):

        async def all_joined() -> bool:
            for pub in pubs.values():
                pub.publish([])  # PUB drops until the SUB has joined: probe
            seen = [app.store.get(name) for name in PODS]
            return all(r is not None and "kv-block-index" in r.attributes for r in seen)

        await eventually(all_joined, timeout=10, what="every pod subscribed")
        yield stub, pubs
    for pub in pubs.values():
        await pub.close()
    context.term()


PROMPT = list(range(1000, 1000 + 16 * 8))  # 8 blocks of 16 tokens


def _matches(response: pb.MatchPrefixResponse) -> list[tuple[str, int, int]]:
    return [(m.endpoint, m.matched_blocks, m.block_size) for m in response.matches]


async def test_match_prefix_ranks_endpoints_by_leading_blocks(fleet: Any) -> None:
    stub, pubs = fleet
    pubs["pod-a"].publish(BlockCache().prompt(PROMPT))
    pubs["pod-b"].publish(BlockCache().prompt(PROMPT[: 16 * 3] + [1] * 80))
    pubs["pod-c"].publish(BlockCache().prompt(PROMPT[:20]))  # 1 full block
    request = pb.MatchPrefixRequest(model=MODEL, token_ids=[*PROMPT, 7, 7, 7])

    async def indexed() -> bool:
        response = await stub.MatchPrefix(request)
        return len(response.matches) == 3

    await eventually(indexed, what="three pods indexed")
    response = await stub.MatchPrefix(request)
    assert response.total_blocks == 8
    assert _matches(response) == [("pod-a", 8, 16), ("pod-b", 3, 16), ("pod-c", 1, 16)]
    blue = await stub.MatchPrefix(
        pb.MatchPrefixRequest(model=MODEL, token_ids=PROMPT, selector="color=blue")
    )
    assert _matches(blue) == [("pod-a", 8, 16), ("pod-c", 1, 16)]
    other_model = await stub.MatchPrefix(pb.MatchPrefixRequest(model="other", token_ids=PROMPT))
    assert (list(other_model.matches), other_model.total_blocks) == ([], 8)
    short = await stub.MatchPrefix(pb.MatchPrefixRequest(model=MODEL, token_ids=PROMPT[:15]))
    assert (list(short.matches), short.total_blocks) == ([], 0)


async def test_match_prefix_refuses_bad_input(fleet: Any) -> None:
    stub, _ = fleet
    with pytest.raises(grpc.aio.AioRpcError) as too_long:
        await stub.MatchPrefix(pb.MatchPrefixRequest(model=MODEL, token_ids=[1] * 262_145))
    assert too_long.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "token_ids" in (too_long.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as bad_selector:
        await stub.MatchPrefix(pb.MatchPrefixRequest(model=MODEL, selector="a in (b"))
    assert bad_selector.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "selector" in (bad_selector.value.details() or "")


async def test_match_prefix_without_an_index_says_how_to_configure_one(tmp_path: Path) -> None:
    async with serving(tmp_path, NO_INDEX, 0) as (_, stub):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.MatchPrefix(pb.MatchPrefixRequest(model=MODEL, token_ids=PROMPT))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "kv-block-index" in (error.value.details() or "")


README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_match_prefix() -> tuple[str, dict[str, Any]]:
    """The README's MatchPrefix grpcurl line and the JSON answer it shows."""
    text = README.read_text()
    start = text.index("## Precise prefix-cache routing")
    section = text[start : text.index("\n## ", start + 1)]
    command = next(
        line
        for line in section.splitlines()
        if line.startswith("grpcurl ") and "MatchPrefix" in line
    )
    answer = section.split("```json\n", 1)[1].split("```", 1)[0]
    return command, json.loads(answer)


async def test_readme_grpcurl_match_prefix_runs_as_written(fleet: Any) -> None:
    stub, pubs = fleet
    command, expected = _readme_match_prefix()
    argv = shlex.split(command)
    request = json.loads(argv[argv.index("-d") + 1])
    blocks = len(request["token_ids"]) // 16
    tokens = request["token_ids"][: blocks * 16]
    # The README's pod is the demo's vllm-0: here pod-a, the README's model as the LoRA name.
    event = stored_event(list(range(blocks)), None, tokens, 16, lora_name=request["model"])
    pubs["pod-a"].publish([event])
    probe = pb.MatchPrefixRequest(model=request["model"], token_ids=request["token_ids"])

    async def indexed() -> bool:
        return len((await stub.MatchPrefix(probe)).matches) == 1

    await eventually(indexed, what="the README's block indexed")
    channel_target = stub._target  # set by the fleet fixture
    argv = [
        str(GRPCURL) if a == "grpcurl" else channel_target if a == "localhost:9002" else a
        for a in argv
    ]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    expected["matches"][0]["endpoint"] = "pod-a"
    assert json.loads(out) == expected


def _scheduler() -> Any:
    path = Path(__file__).resolve().parent.parent / "examples" / "python_scheduler" / "scheduler.py"
    spec = importlib.util.spec_from_file_location("python_scheduler_prefix", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


sched = _scheduler()


def test_prefix_scorer_is_the_share_of_leading_blocks_held() -> None:
    endpoints = [pb.Endpoint(name=n) for n in ("a", "b", "c")]
    assert sched.prefix_scores(endpoints, {"a": 4, "c": 1}, 4) == [1.0, 0.0, 0.25]
    assert sched.prefix_scores(endpoints, {}, 0) == [0.0, 0.0, 0.0]
    config = sched.Config(prompt="x", model="m")
    decision = sched.pick(endpoints, config, ({"b": 3}, 4))
    assert decision.pick == "b"  # equal load: the prefix decides
    assert sched.format_decision(1, decision, config)[1].endswith("prefix=0.750")


async def test_python_scheduler_routes_a_prompt_to_the_pod_holding_its_prefix(fleet: Any) -> None:
    stub, pubs = fleet
    prompt = "You are a concise assistant; answer in one line. Why is the sky blue?"
    tokens = sched.stand_in_tokens(prompt)
    pubs["pod-c"].publish(BlockCache().prompt(tokens))  # 4 of its 4 full blocks
    pubs["pod-a"].publish(BlockCache().prompt(tokens[:16]))  # 1 of 4
    probe = pb.MatchPrefixRequest(model=MODEL, token_ids=tokens)

    async def indexed() -> bool:
        return len((await stub.MatchPrefix(probe)).matches) == 2

    await eventually(indexed, what="both pods indexed")
    out = io.StringIO()
    config = sched.Config(prompt=prompt, model=MODEL)
    assert await sched.run(stub._target, config, picks=1, interval=0.05, out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[1] == "pick 1: pod-c score=1.000 (best of 3)", out.getvalue()
    prefixes = [(line.split()[0], line.split()[-1]) for line in lines[2:]]
    assert prefixes == [
        ("pod-c", "prefix=1.000"),
        ("pod-a", "prefix=0.250"),
        ("pod-b", "prefix=0.000"),
    ]


GO_TOOLS = ("go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc")
GO_BUILD = Path(__file__).resolve().parent.parent / "examples" / "go-scheduler" / "build.sh"
GO_MISSING = [tool for tool in GO_TOOLS if shutil.which(tool) is None]


@pytest.mark.slow
@pytest.mark.skipif(
    bool(GO_MISSING) and os.environ.get("DATALAYER_REQUIRE_GO") != "1",
    reason=f"Go toolchain not installed ({', '.join(GO_MISSING)}): scripts/install-go-toolchain",
)
async def test_go_scheduler_routes_a_prompt_to_the_pod_holding_its_prefix(
    fleet: Any, tmp_path: Path
) -> None:
    stub, pubs = fleet
    made = await asyncio.create_subprocess_exec(
        str(GO_BUILD),
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(made.communicate(), 300)
    assert made.returncode == 0, output.decode()
    prompt = "You are a concise assistant; answer in one line. Why is the sky blue?"
    tokens = list(prompt.encode())  # the Go program's StandInTokens
    pubs["pod-b"].publish(BlockCache().prompt(tokens))
    probe = pb.MatchPrefixRequest(model=MODEL, token_ids=tokens)

    async def indexed() -> bool:
        return len((await stub.MatchPrefix(probe)).matches) == 1

    await eventually(indexed, what="pod-b indexed")
    process = await asyncio.create_subprocess_exec(
        str(tmp_path / "go-scheduler"),
        *("--target", stub._target, "--picks", "1", "--prompt", prompt, "--model", MODEL),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[1] == "pick 1: pod-b score=1.000 (best of 3)", out.decode()
    assert lines[2].split()[0] == "pod-b"
    assert lines[2].endswith("prefix=1.000")
