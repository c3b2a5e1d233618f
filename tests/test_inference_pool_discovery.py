"""kubernetes-pod-discovery from an InferencePool (issue 14 item 7), against the fake API
server: the pool's selector and target ports choose the endpoints, a change to the pool is
followed, a deleted pool empties the set, and a pod's status.hostIP is its node address."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from fake_kube_cluster import FakeCluster, make_pool

from datalayer.model import EndpointSpec
from datalayer.parameters import ParameterError, decode
from plugins.discovery.kubernetes import KubernetesDiscoveryParameters, KubernetesPodDiscovery
from plugins.discovery.kubernetes.pool import pool_spec

from fake_kube_api import make_pod


class Sink:
    def __init__(self) -> None:
        self.specs: dict[str, EndpointSpec] = {}
        self.synced = False

    async def upsert(self, spec: EndpointSpec) -> None:
        self.specs[spec.name] = spec

    async def delete(self, name: str) -> None:
        self.specs.pop(name, None)

    async def replace_all(self, specs: Sequence[EndpointSpec]) -> None:
        self.specs = {s.name: s for s in specs}

    def mark_synced(self) -> None:
        self.synced = True


async def until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[FakeCluster, Path]]:
    made = FakeCluster()
    await made.start()
    config = tmp_path / "kubeconfig"
    config.write_text(made.kubeconfig())
    yield made, config
    await made.close()


def discovery(kubeconfig: Path, **extra: object) -> KubernetesPodDiscovery:
    params = decode(
        KubernetesDiscoveryParameters,
        {
            "inferencePool": {"name": "llama"},
            "kubeconfig": str(kubeconfig),
            "backoffInitial": 0.05,
            "backoffMax": 0.2,
            **extra,
        },
    )
    return KubernetesPodDiscovery("k8s", params)


async def test_the_pool_chooses_and_follows(cluster: tuple[FakeCluster, Path]) -> None:
    api, kubeconfig = cluster
    api.pools.apply(make_pool("llama", {"app": "vllm-llama"}, [8000, 8001]))
    api.pools.apply(make_pool("other", {"app": "vllm-other"}, [9000]))
    api.pods.apply(make_pod("llama-0", "10.0.0.1", {"app": "vllm-llama"}, host_ip="192.168.0.11"))
    api.pods.apply(make_pod("llama-1", "10.0.0.2", {"app": "vllm-llama", "tier": "canary"}))
    api.pods.apply(make_pod("other-0", "10.0.0.3", {"app": "vllm-other"}))
    sink = Sink()
    task = asyncio.create_task(discovery(kubeconfig).run(sink))
    try:
        names = ["llama-0-rank-0", "llama-0-rank-1", "llama-1-rank-0", "llama-1-rank-1"]
        await until(lambda: sorted(sink.specs) == names and sink.synced, "the pool's pods")
        first = sink.specs["llama-0-rank-1"]
        assert (first.address, first.port, first.node_address) == ("10.0.0.1", 8001, "192.168.0.11")

        # The pool narrows its selector and drops a port: followed, without a restart.
        api.pools.apply(
            make_pool(
                "llama",
                {"app": "vllm-llama"},
                [8000],
                expressions=[{"key": "tier", "operator": "In", "values": ["canary"]}],
            )
        )
        await until(lambda: sorted(sink.specs) == ["llama-1-rank-0"], "the narrowed pool")
        api.pods.apply(make_pod("llama-2", "10.0.0.4", {"app": "vllm-llama", "tier": "canary"}))
        await until(lambda: "llama-2-rank-0" in sink.specs, "a new pod under the new selector")

        api.pools.delete("llama")
        await until(lambda: sink.specs == {}, "no endpoints without the pool")
        api.pools.apply(make_pool("llama", {"app": "vllm-other"}, [9000]))
        await until(lambda: sorted(sink.specs) == ["other-0-rank-0"], "the pool back, changed")
        assert sink.specs["other-0-rank-0"].port == 9000
    finally:
        task.cancel()
        await asyncio.wait([task])


async def test_pool_watch_survives_410(cluster: tuple[FakeCluster, Path]) -> None:
    api, kubeconfig = cluster
    api.pools.apply(make_pool("llama", {"app": "a"}, [8000]))
    api.pods.apply(make_pod("a-0", "10.0.0.1", {"app": "a"}))
    api.pods.apply(make_pod("b-0", "10.0.0.2", {"app": "b"}))
    sink = Sink()
    task = asyncio.create_task(discovery(kubeconfig).run(sink))
    try:
        await until(lambda: sorted(sink.specs) == ["a-0-rank-0"], "first pool")
        await until(lambda: api.pools.open_watches == 1, "the pool watch")
        api.pools.end_watches()
        api.pools.apply(make_pool("llama", {"app": "b"}, [8000]))  # missed by the watch
        api.pools.compact()
        api.pools.expire_watches()
        await until(lambda: sorted(sink.specs) == ["b-0-rank-0"], "the change found by relist")
    finally:
        task.cancel()
        await asyncio.wait([task])


def test_parameters(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="targetPorts: must list at least one port"):
        KubernetesPodDiscovery("k", decode(KubernetesDiscoveryParameters, {}))
    with pytest.raises(ParameterError, match="inferencePool: the pool gives"):
        KubernetesPodDiscovery(
            "k",
            decode(
                KubernetesDiscoveryParameters,
                {"inferencePool": {"name": "p"}, "targetPorts": [8000]},
            ),
        )
    with pytest.raises(ParameterError) as missing:
        decode(KubernetesDiscoveryParameters, {"inferencePool": {}}, "parameters")
    assert missing.value.field == "parameters.inferencePool.name"


def test_pool_spec_refuses_what_it_cannot_use() -> None:
    assert pool_spec(make_pool("p", {"app": "x"}, [8000, 8001])).target_ports == (8000, 8001)
    with pytest.raises(ValueError, match="targetPorts is empty"):
        pool_spec(make_pool("p", {"app": "x"}, []))
    with pytest.raises(ValueError, match="selects nothing"):
        pool_spec(make_pool("p", {}, [8000]))
    with pytest.raises(ValueError, match="not a new port"):
        pool_spec(make_pool("p", {"app": "x"}, [8000, 8000]))
