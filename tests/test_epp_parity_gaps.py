"""Issue 14 item 6: the smaller gaps to upstream's data layer, each over real HTTP.

`port` on metrics-data-source, upstream's TLS file names beside ours, `object`/`created`/
`owned_by` in the models attribute, and per-source intervals under the base tick clamped (as
upstream) instead of polled faster than the collector's tick.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from datalayer.config import load_config_file, load_config_text
from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import decode
from datalayer.plugin import ParameterError
from datalayer.registry import default_registry
from mockpod.server import MockPod, start_pod
from mockpod.spec import PodSpec
from plugins.extractors.core_metrics.extractor import CoreMetricsExtractor
from plugins.extractors.models import ModelsDataExtractor
from plugins.sources.metrics.source import MetricsDataSource, MetricsSourceParameters
from plugins.sources.models import ModelsDataSource

from certs import Pem, make_pki


@pytest.fixture
async def pod() -> AsyncIterator[MockPod]:
    made = await start_pod(PodSpec(name="vllm-0", model="meta-llama/Llama-3.1-8B", loras=("sql",)))
    yield made
    await made.close()


def core() -> CoreMetricsExtractor:
    return CoreMetricsExtractor("core", CoreMetricsExtractor.Parameters())


async def test_port_scrapes_another_port_than_the_endpoints(pod: MockPod) -> None:
    # The endpoint's own port (1) has nothing listening: only `port` can reach the pod.
    endpoint = EndpointSpec("vllm-0", "127.0.0.1", 1)
    params = decode(MetricsSourceParameters, {"port": pod.port})
    source = MetricsDataSource("m", params)
    source.start([core()])
    try:
        samples = await source.poll(endpoint)
        assert "vllm:num_requests_waiting" in samples
    finally:
        await source.close()


@pytest.fixture
async def mtls_pod(tmp_path: Path) -> AsyncIterator[tuple[Pem, Pem, int]]:
    ca, server, client = make_pki(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.cert, server.key)
    context.load_verify_locations(ca.cert)
    context.verify_mode = ssl.CERT_REQUIRED

    async def page(request: web.Request) -> web.Response:
        return web.Response(body=b'vllm:num_requests_waiting{engine="0"} 5\n')

    app = web.Application()
    app.router.add_get("/metrics", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    yield ca, client, int(runner.addresses[0][1])
    await runner.cleanup()


async def test_upstream_tls_names_reach_the_client(mtls_pod: tuple[Pem, Pem, int]) -> None:
    ca, client, port = mtls_pod
    params = decode(
        MetricsSourceParameters,
        {
            "scheme": "https",
            "caCertPath": str(ca.cert),
            "clientCertPath": str(client.cert),
            "clientKeyPath": str(client.key),
        },
    )
    source = MetricsDataSource("m", params)
    source.start([core()])
    try:
        samples = await source.poll(EndpointSpec("p", "127.0.0.1", port))
        assert samples["vllm:num_requests_waiting"][0].value == 5.0
    finally:
        await source.close()


def test_upstream_tls_names_are_checked_like_ours(tmp_path: Path) -> None:
    ca, _, client = make_pki(tmp_path)
    with pytest.raises(ParameterError, match="certFile and keyFile go together"):
        MetricsDataSource(
            "m", MetricsSourceParameters(scheme="https", client_cert_path=str(client.cert))
        )
    with pytest.raises(ParameterError) as both:
        MetricsDataSource(
            "m",
            MetricsSourceParameters(ca_file=str(ca.cert), ca_cert_path=str(ca.cert)),
        )
    assert both.value.field == "caCertPath"


def test_upstream_tls_names_resolve_next_to_the_config(tmp_path: Path) -> None:
    ca, _, _ = make_pki(tmp_path)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(CLAMPED.replace("{}", "{scheme: https, caCertPath: ca.crt}"))
    config = load_config_file(config_file, default_registry())
    source = config.plugins["metrics-data-source"]
    assert isinstance(source, MetricsDataSource)
    assert source.http_params.tls.ca_file == str(ca.cert)


async def test_models_attribute_keeps_object_created_owned_by(pod: MockPod) -> None:
    source = ModelsDataSource("models", ModelsDataSource.Parameters())
    extractor = ModelsDataExtractor("models-x", ModelsDataExtractor.Parameters())
    source.start([extractor])
    try:
        payload = await source.poll(EndpointSpec("vllm-0", "127.0.0.1", pod.port))
    finally:
        await source.close()
    out = EndpointUpdate()
    extractor.extract(payload, EndpointSpec("vllm-0", "127.0.0.1", pod.port), out)
    assert out.errors == []
    models = out.attributes["/v1/models"]
    assert isinstance(models, list)
    base, adapter = models
    assert base == {
        "id": "meta-llama/Llama-3.1-8B",
        "parent": None,
        "object": "model",
        "created": int(pod.state.started_at),
        "owned_by": "vllm",
    }
    assert (adapter["id"], adapter["parent"]) == ("sql", "meta-llama/Llama-3.1-8B")


CLAMPED = """\
plugins:
- type: metrics-data-source
  parameters: {}
- type: core-metrics-extractor
- type: file-discovery
  parameters: {path: /dev/null, watchFile: false}
dataLayer:
  interval: 100ms
  sources:
  - pluginRef: metrics-data-source
    interval: 20ms
    extractors: [{pluginRef: core-metrics-extractor}]
  discovery: {pluginRef: file-discovery}
"""


def test_a_source_interval_under_the_base_tick_is_clamped_with_a_warning() -> None:
    config = load_config_text(CLAMPED, default_registry())
    assert config.sources[0].interval == pytest.approx(0.1)
    assert any(
        "dataLayer.sources[0].interval: 0.02s is under the base tick (0.1s); using 0.1s" in w
        for w in config.warnings
    )


def test_a_source_interval_over_the_base_tick_is_kept() -> None:
    config = load_config_text(CLAMPED.replace("interval: 20ms", "interval: 1s"), default_registry())
    assert config.sources[0].interval == pytest.approx(1.0)
    assert not any("base tick" in w for w in config.warnings)
