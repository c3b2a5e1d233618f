"""dcgm-data-source + dcgm-extractor against a mock DCGM exporter over real HTTP.

The exporter's page is dcgm-exporter's default counter set for an 8-GPU node (~42 KB); the
extractor must pick the endpoint's own GPUs out of it by the `pod` label, take the busiest,
and scale to 0..1. With `useNodeAddress` the page comes from the node's address, not the pod's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from datalayer.config import load_config_text
from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import decode
from datalayer.registry import default_registry
from mockpod.dcgm import DcgmNode, start_dcgm_exporter
from plugins.discovery.kubernetes.pods import pod_endpoints
from plugins.extractors.dcgm import GPU_UTILIZATION, DcgmExtractor
from plugins.shared.http.aio import PollError
from plugins.sources.dcgm import DcgmDataSource, DcgmSourceParameters

from fake_kube_api import make_pod

#: An address nothing answers on: a poll that used it instead of the node's would fail.
UNROUTED = "192.0.2.1"


@pytest.fixture
async def node() -> AsyncIterator[tuple[DcgmNode, int]]:
    made = DcgmNode()
    made.allocate("vllm-0", [0, 1], [37.0, 82.0])  # tensor-parallel pod: two GPUs
    made.allocate("vllm-1", [2], [12.5])
    made.gpus[7].util = 99.0  # unallocated, busy outside Kubernetes: nobody's
    runner, port = await start_dcgm_exporter(made)
    yield made, port
    await runner.cleanup()


def wired(**params: object) -> tuple[DcgmDataSource, DcgmExtractor]:
    source = DcgmDataSource("dcgm", decode(DcgmSourceParameters, params))
    extractor = DcgmExtractor("dcgm-extractor", DcgmExtractor.Parameters())
    source.start([extractor])
    return source, extractor


async def read(
    source: DcgmDataSource, extractor: DcgmExtractor, endpoint: EndpointSpec
) -> EndpointUpdate:
    out = EndpointUpdate()
    extractor.extract(await source.poll(endpoint), endpoint, out)
    return out


async def test_daemonset_page_read_per_pod_from_the_node_address(
    node: tuple[DcgmNode, int],
) -> None:
    _, port = node
    source, extractor = wired(port=port, useNodeAddress=True)
    try:
        pod0 = EndpointSpec(
            "vllm-0-rank-0", UNROUTED, 8000, "default", node_address="127.0.0.1", pod_name="vllm-0"
        )
        pod1 = EndpointSpec(
            "vllm-1-rank-0", UNROUTED, 8000, "default", node_address="127.0.0.1", pod_name="vllm-1"
        )
        first, second = await read(source, extractor, pod0), await read(source, extractor, pod1)
    finally:
        await source.close()
    assert first.errors == []
    assert second.errors == []
    assert first.attributes[GPU_UTILIZATION] == pytest.approx(0.82)  # max of 37 and 82
    assert second.attributes[GPU_UTILIZATION] == pytest.approx(0.125)


async def test_the_page_follows_the_exporter(node: tuple[DcgmNode, int]) -> None:
    exporter, port = node
    source, extractor = wired(port=port)
    endpoint = EndpointSpec("vllm-1", "127.0.0.1", 8000, "default")
    try:
        assert (await read(source, extractor, endpoint)).attributes[GPU_UTILIZATION] == 0.125
        exporter.gpus[2].util = 100.0
        assert (await read(source, extractor, endpoint)).attributes[GPU_UTILIZATION] == 1.0
    finally:
        await source.close()


async def test_a_pod_in_another_namespace_is_not_read(node: tuple[DcgmNode, int]) -> None:
    _, port = node
    source, extractor = wired(port=port)
    try:
        out = await read(source, extractor, EndpointSpec("vllm-0", "127.0.0.1", 1, "prod"))
    finally:
        await source.close()
    assert GPU_UTILIZATION not in out.attributes
    assert out.errors == [f"{GPU_UTILIZATION}: DCGM_FI_DEV_GPU_UTIL has no series for pod 'vllm-0'"]


async def test_use_node_address_without_one_fails_the_poll() -> None:
    source, _ = wired(useNodeAddress=True)
    try:
        with pytest.raises(PollError, match="has no node address"):
            await source.poll(EndpointSpec("p", "127.0.0.1", 8000))
    finally:
        await source.close()


async def test_a_sidecar_page_without_pod_labels_counts_every_gpu() -> None:
    page = (
        b"# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).\n"
        b"# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n"
        b'DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",device="nvidia0",Hostname="n"} 40\n'
        b'DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-b",device="nvidia1",Hostname="n"} NaN\n'
        b'DCGM_FI_DEV_GPU_UTIL{gpu="2",UUID="GPU-c",device="nvidia2",Hostname="n"} 65\n'
    )

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    source, extractor = wired(port=int(runner.addresses[0][1]))
    try:
        out = await read(source, extractor, EndpointSpec("any-pod", "127.0.0.1", 8000))
    finally:
        await source.close()
        await runner.cleanup()
    assert out.attributes[GPU_UTILIZATION] == pytest.approx(0.65)  # NaN skipped


def test_a_page_without_the_family_is_an_error_for_the_attribute() -> None:
    from plugins.shared.prometheus.scan import SelectiveScanner

    extractor = DcgmExtractor("d", DcgmExtractor.Parameters())
    samples = SelectiveScanner(extractor.required_names()).scan(
        DcgmNode().render().replace(b"DCGM_FI_DEV_GPU_UTIL", b"DCGM_FI_DEV_GPU_UTIL_X")
    )
    out = EndpointUpdate()
    extractor.extract(samples, EndpointSpec("p", "a", 1), out)
    assert out.errors == [f"{GPU_UTILIZATION}: DCGM_FI_DEV_GPU_UTIL is not on the page"]


def test_upstream_defaults_and_interval_parameter() -> None:
    text = """\
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: dcgm-data-source
  name: dcgm-source
  parameters: {useNodeAddress: true, interval: 1s}
- type: dcgm-extractor
dataLayer:
  sources:
  - pluginRef: dcgm-source
    extractors: [{pluginRef: dcgm-extractor}]
"""
    config = load_config_text(text, default_registry())
    (binding,) = config.sources
    source = binding.source
    assert isinstance(source, DcgmDataSource)
    assert (source.http_params.port, source.http_params.insecure_skip_verify) == (9400, True)
    assert binding.interval == 1.0
    node = EndpointSpec("p", "10.0.0.5", 8000, node_address="10.1.0.9")
    assert source.url_for(node) == "http://10.1.0.9:9400/metrics"


def test_kubernetes_discovery_sets_node_address_pod_name_and_rank() -> None:
    from lightkube.resources.core_v1 import Pod

    pod = Pod.from_dict(make_pod("vllm-0", "10.0.0.7", host_ip="192.168.4.2"))
    assert isinstance(pod, Pod)
    specs = pod_endpoints(pod, [8000, 8001], "default")
    assert [(s.name, s.node_address, s.pod_name, s.rank) for s in specs.values()] == [
        ("vllm-0-rank-0", "192.168.4.2", "vllm-0", 0),
        ("vllm-0-rank-1", "192.168.4.2", "vllm-0", 1),
    ]
