"""Scraping over HTTPS, with TLS settings per source: a private CA, a client certificate for
pods that require mTLS, insecureSkipVerify; and sources with different settings in one process
do not affect each other (upstream's shared-client quirk)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from datalayer.model import EndpointSpec
from datalayer.plugin import ParameterError
from plugins.extractors.core_metrics.extractor import CoreMetricsExtractor
from plugins.sources.metrics.source import MetricsDataSource, MetricsSourceParameters

from certs import Pem, make_pki

PAGE = b'vllm:num_requests_waiting{engine="0"} 3\n'


async def _page(request: web.Request) -> web.Response:
    return web.Response(body=PAGE, content_type="text/plain")


async def serve_https(ca: Pem, server: Pem, require_client_cert: bool) -> tuple[web.AppRunner, int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.cert, server.key)
    if require_client_cert:
        context.load_verify_locations(ca.cert)
        context.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.router.add_get("/metrics", _page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return runner, int(runner.addresses[0][1])


@pytest.fixture
def pki(tmp_path: Path) -> tuple[Pem, Pem, Pem]:
    return make_pki(tmp_path)


@pytest.fixture
async def https_pod(pki: tuple[Pem, Pem, Pem]) -> AsyncIterator[int]:
    ca, server, _ = pki
    runner, port = await serve_https(ca, server, require_client_cert=False)
    yield port
    await runner.cleanup()


def source(**params: object) -> MetricsDataSource:
    made = MetricsDataSource("m", MetricsSourceParameters(scheme="https", **params))  # type: ignore[arg-type]
    made.start([CoreMetricsExtractor("core", CoreMetricsExtractor.Parameters())])
    return made


async def test_sources_with_different_tls_settings_do_not_affect_each_other(
    pki: tuple[Pem, Pem, Pem], https_pod: int
) -> None:
    ca, _, _ = pki
    endpoint = EndpointSpec("pod", "127.0.0.1", https_pod)
    private_ca = source(ca_file=str(ca.cert))
    system_ca = source()
    insecure = source(insecure_skip_verify=True)
    try:
        for _ in range(2):  # interleaved, twice: no setting leaks from one to the other
            samples = await private_ca.poll(endpoint)
            assert samples["vllm:num_requests_waiting"][0].value == 3.0
            with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"):
                await system_ca.poll(endpoint)
            assert (await insecure.poll(endpoint))["vllm:num_requests_waiting"][0].value == 3.0
    finally:
        for made in (private_ca, system_ca, insecure):
            await made.close()


async def test_client_certificate_for_pods_that_require_mtls(pki: tuple[Pem, Pem, Pem]) -> None:
    ca, server, client = pki
    runner, port = await serve_https(ca, server, require_client_cert=True)
    endpoint = EndpointSpec("pod", "127.0.0.1", port)
    with_cert = source(ca_file=str(ca.cert), cert_file=str(client.cert), key_file=str(client.key))
    without = source(ca_file=str(ca.cert))
    try:
        assert (await with_cert.poll(endpoint))["vllm:num_requests_waiting"][0].value == 3.0
        with pytest.raises(Exception):  # noqa: B017, PT011 - the TLS alert's type varies by OS
            await without.poll(endpoint)
    finally:
        await with_cert.close()
        await without.close()
        await runner.cleanup()


def test_tls_parameters_are_checked_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="certFile and keyFile go together"):
        MetricsDataSource("m", MetricsSourceParameters(scheme="https", cert_file="c.pem"))
    with pytest.raises(ParameterError) as info:
        MetricsDataSource("m", MetricsSourceParameters(scheme="https", ca_file=str(tmp_path / "x")))
    assert info.value.field == "caFile"
