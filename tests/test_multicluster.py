"""multicluster-metrics-data-source, -extractor and multicluster-file-discovery (issue 14
item 5): a peer EPP's pool page over verified HTTPS, its metrics host from labels, the pool
aggregates as upstream's attributes, and a file of clusters by host name."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import decode
from plugins.discovery.multicluster import MulticlusterFileDiscovery
from plugins.extractors.multicluster import (
    KV_CACHE_ATTRIBUTE,
    QUEUE_ATTRIBUTE,
    MulticlusterMetricsExtractor,
)
from plugins.shared.http.aio import PollError
from plugins.sources.multicluster import MulticlusterMetricsDataSource

from certs import Pem, make_pki

#: A peer EPP's /metrics: controller-runtime and Go runtime families around the pool gauges
#: (two pools on this EPP, so the spec must pick one).
EPP_PAGE = b"""\
# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 213
# HELP go_memstats_alloc_bytes Number of bytes allocated and still in use.
# TYPE go_memstats_alloc_bytes gauge
go_memstats_alloc_bytes 4.2188104e+07
# HELP controller_runtime_reconcile_total Total number of reconciliations per controller
# TYPE controller_runtime_reconcile_total counter
controller_runtime_reconcile_total{controller="inferencepool",result="success"} 1822
controller_runtime_reconcile_total{controller="pod",result="success"} 90211
# HELP llm_d_epp_average_kv_cache_utilization The average kv cache utilization for a pool.
# TYPE llm_d_epp_average_kv_cache_utilization gauge
llm_d_epp_average_kv_cache_utilization{name="llama-pool"} 0.4375
llm_d_epp_average_kv_cache_utilization{name="qwen-pool"} 0.9
# HELP llm_d_epp_average_queue_size The average number of requests pending in the queue.
# TYPE llm_d_epp_average_queue_size gauge
llm_d_epp_average_queue_size{name="llama-pool"} 3.5
llm_d_epp_average_queue_size{name="qwen-pool"} 12
# HELP llm_d_epp_ready_pods The number of ready pods in the inference server pool.
# TYPE llm_d_epp_ready_pods gauge
llm_d_epp_ready_pods{name="llama-pool"} 8
llm_d_epp_ready_pods{name="qwen-pool"} 4
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 5321.44
"""


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[tuple[Pem, int, list[bytes]]]:
    ca, server, _ = make_pki(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.cert, server.key)
    body = [EPP_PAGE]

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=body[0], content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    yield ca, int(runner.addresses[0][1]), body
    await runner.cleanup()


def wired(**params: object) -> tuple[MulticlusterMetricsDataSource, MulticlusterMetricsExtractor]:
    source = MulticlusterMetricsDataSource(
        "mc", decode(MulticlusterMetricsDataSource.Parameters, params)
    )
    extractor = MulticlusterMetricsExtractor(
        "mcx",
        decode(
            MulticlusterMetricsExtractor.Parameters,
            {
                "kvCacheUtilizationMetric": (
                    'llm_d_epp_average_kv_cache_utilization{name="llama-pool"}'
                ),
                "queueSizeMetric": 'llm_d_epp_average_queue_size{name="llama-pool"}',
            },
        ),
    )
    source.start([extractor])
    return source, extractor


def cluster(port: int) -> EndpointSpec:
    # The gateway's name does not resolve here: only the metrics host labels reach the peer.
    return EndpointSpec(
        "cluster-a",
        "gw.cluster-a.invalid",
        443,
        labels={"metricsAddress": "127.0.0.1", "metricsPort": str(port)},
    )


async def test_pool_aggregates_over_verified_https(peer: tuple[Pem, int, list[bytes]]) -> None:
    ca, port, _ = peer
    source, extractor = wired(caCertPath=str(ca.cert))
    try:
        samples = await source.poll(cluster(port))
    finally:
        await source.close()
    out = EndpointUpdate()
    extractor.extract(samples, cluster(port), out)
    assert out.errors == []
    assert out.attributes == {KV_CACHE_ATTRIBUTE: 0.4375, QUEUE_ATTRIBUTE: 3.5}
    assert out.metrics == {}  # a cluster has no engine fields


async def test_verification_is_on_by_default(peer: tuple[Pem, int, list[bytes]]) -> None:
    _, port, _ = peer
    source, _ = wired()  # no CA: the self-made certificate is refused
    try:
        with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"):
            await source.poll(cluster(port))
    finally:
        await source.close()


async def test_the_8_mib_cap(peer: tuple[Pem, int, list[bytes]]) -> None:
    ca, port, body = peer
    body[0] = EPP_PAGE + b"# " + b"x" * (8 * 1024 * 1024) + b"\n"
    source, _ = wired(caCertPath=str(ca.cert))
    try:
        with pytest.raises(PollError):
            await source.poll(cluster(port))
    finally:
        await source.close()


def test_one_missing_aggregate_does_not_hide_the_other() -> None:
    from plugins.shared.prometheus.scan import SelectiveScanner

    extractor = MulticlusterMetricsExtractor("x", MulticlusterMetricsExtractor.Parameters())
    page = EPP_PAGE.replace(b"llm_d_epp_average_queue_size", b"llm_d_epp_queue_renamed")
    out = EndpointUpdate()
    extractor.extract(SelectiveScanner(extractor.required_names()).scan(page), cluster(1), out)
    # Unfiltered default spec: both pools' series are averaged.
    assert out.attributes == {KV_CACHE_ATTRIBUTE: pytest.approx((0.4375 + 0.9) / 2)}
    assert out.errors == [f"{QUEUE_ATTRIBUTE}: no usable series for llm_d_epp_average_queue_size"]


class Sink:
    def __init__(self) -> None:
        self.specs: list[EndpointSpec] = []
        self.synced = False

    async def replace_all(self, specs: Sequence[EndpointSpec]) -> None:
        self.specs = list(specs)

    async def upsert(self, spec: EndpointSpec) -> None: ...

    async def delete(self, name: str) -> None: ...

    def mark_synced(self) -> None:
        self.synced = True


async def test_cluster_file_allows_host_names_and_leaves_out_bad_entries(tmp_path: Path) -> None:
    path = tmp_path / "clusters.yaml"
    entries = [
        {
            "name": "us-east",
            "address": "gw.us-east.example.com",
            "port": 443,
            "labels": {"metricsAddress": "epp.us-east.example.com", "metricsPort": "9090"},
        },
        {"name": "eu-west", "address": "10.20.0.15", "port": 80},
        {"name": "v6", "address": "fd00::15", "port": 80},
        {"name": "bad-host", "address": "gw_us!", "port": 443},
        {
            "name": "bad-port",
            "address": "gw.ap.example.com",
            "port": 443,
            "labels": {"metricsPort": "ninety"},
        },
    ]
    path.write_text(yaml.safe_dump({"endpoints": entries}))
    discovery = MulticlusterFileDiscovery(
        "mc", decode(MulticlusterFileDiscovery.Parameters, {"path": str(path), "watchFile": False})
    )
    sink = Sink()
    await discovery.run(sink)
    assert [s.name for s in sink.specs] == ["us-east", "eu-west", "v6"]
    assert sink.synced
    source, _ = wired()
    assert source.url_for(sink.specs[0]) == "https://epp.us-east.example.com:9090/metrics"
    assert source.url_for(sink.specs[2]) == "https://[fd00::15]:80/metrics"
