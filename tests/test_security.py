"""gRPC TLS, mTLS and bearer-token auth, with certificates made in the test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from datalayer.client import ClientTls, DataLayerClient
from server.security import TlsFiles

from certs import make_pki
from stack import eventually, running_stack

TOKEN = "s3cret-token-for-tests"


async def test_tls_serves_clients_that_trust_the_ca(tmp_path: Path) -> None:
    ca, server, _ = make_pki(tmp_path)
    async with running_stack(tmp_path, tls=TlsFiles(server.cert, server.key)) as stack:
        target = f"127.0.0.1:{stack.app.grpc_port}"
        async with DataLayerClient(target, tls=ClientTls(ca=ca.cert.read_bytes())) as client:

            async def listed() -> bool:
                return len((await client.list_endpoints()).endpoints) == 3

            await eventually(listed, what="three endpoints over TLS")
        async with DataLayerClient(target) as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await plaintext.list_endpoints(timeout=2)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        other_ca, _, _ = make_pki(
            tmp_path / "other" if (tmp_path / "other").mkdir() is None else tmp_path
        )
        async with DataLayerClient(target, tls=ClientTls(ca=other_ca.cert.read_bytes())) as wrong:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await wrong.list_endpoints(timeout=2)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_requires_a_client_certificate(tmp_path: Path) -> None:
    ca, server, client_pem = make_pki(tmp_path)
    tls = TlsFiles(server.cert, server.key, client_ca=ca.cert)
    async with running_stack(tmp_path, tls=tls) as stack:
        target = f"127.0.0.1:{stack.app.grpc_port}"
        with_cert = ClientTls(
            ca=ca.cert.read_bytes(),
            cert=client_pem.cert.read_bytes(),
            key=client_pem.key.read_bytes(),
        )
        async with DataLayerClient(target, tls=with_cert) as client:
            listing = await client.list_endpoints(timeout=5)
            assert listing.instance_id == stack.app.store.instance_id
        async with DataLayerClient(target, tls=ClientTls(ca=ca.cert.read_bytes())) as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await anonymous.list_endpoints(timeout=2)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_bearer_token_guards_every_call_but_health(tmp_path: Path) -> None:
    async with running_stack(tmp_path, token=TOKEN) as stack:
        target = f"127.0.0.1:{stack.app.grpc_port}"
        for token in (None, "wrong", TOKEN + "x"):
            async with DataLayerClient(target, token=token) as client:
                for call in (
                    client.list_endpoints(),
                    client.get_endpoint("pod-a"),
                    anext(client.watch()),
                ):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await call
                    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                    assert "bearer token" in (info.value.details() or "")
        async with DataLayerClient(target, token=TOKEN) as client:
            assert len((await client.list_endpoints()).endpoints) == 3
            first = await anext(client.watch())
            assert first.synced
        async with grpc.aio.insecure_channel(target) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status in (
                health_pb2.HealthCheckResponse.SERVING,
                health_pb2.HealthCheckResponse.NOT_SERVING,
            )


def test_token_comes_from_a_file_or_env_never_the_command_line_and_is_not_logged(
    tmp_path: Path,
) -> None:
    datalayer = str(Path(sys.executable).with_name("datalayer"))
    no_flag = subprocess.run(
        [datalayer, "serve", "--config", "x", "--token", TOKEN], capture_output=True, text=True
    )
    assert no_flag.returncode == 2
    assert "unrecognized arguments: --token" in no_flag.stderr

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    (tmp_path / "e.yaml").write_text("endpoints: []\n")  # a missing file is never SERVING
    config = tmp_path / "c.yaml"
    config.write_text(
        "plugins:\n- type: metrics-data-source\n- type: core-metrics-extractor\n"
        f"- type: file-discovery\n  parameters: {{path: {tmp_path / 'e.yaml'}}}\n"
        "dataLayer:\n  sources:\n  - pluginRef: metrics-data-source\n"
        "    extractors: [{pluginRef: core-metrics-extractor}]\n"
        "  discovery: {pluginRef: file-discovery}\n"
    )
    process = subprocess.Popen(
        [
            datalayer,
            "serve",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--metrics-port",
            "-1",
            "--token-file",
            str(token_file),
            "--log-level",
            "debug",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if "health is SERVING" in line:
            break
    process.terminate()
    _, rest = process.communicate(timeout=10)
    output = "".join(lines) + rest
    assert "bearer-token authentication is on (token not shown)" in output
    assert TOKEN not in output


async def _get(url: str, **kwargs: object) -> tuple[int, str]:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(url, **kwargs) as response:  # type: ignore[arg-type]
        return response.status, await response.text()


async def test_status_pages_need_the_token_when_grpc_does(tmp_path: Path) -> None:
    """/status and /status.json show every endpoint's data: with a gRPC token they used to
    be open on the metrics port. /metrics (self-metrics only) stays open for scrapers."""
    import base64

    async with running_stack(tmp_path, token=TOKEN) as stack:
        base = f"http://127.0.0.1:{stack.app.metrics_port}"
        for path in ("/status", "/status.json"):
            status, _ = await _get(base + path)
            assert status == 401, path
            for wrong in ("Bearer wrong", f"Bearer {TOKEN}x", "Basic eDp5"):
                status, _ = await _get(base + path, headers={"Authorization": wrong})
                assert status == 401, (path, wrong)
            status, _ = await _get(base + path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert status == 200, path
            basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
            status, _ = await _get(base + path, headers={"Authorization": f"Basic {basic}"})
            assert status == 200, path  # a browser's own login prompt: any user, the token
        import aiohttp

        async with aiohttp.ClientSession() as http, http.get(base + "/status.json") as refused:
            assert "pod-a" not in await refused.text()
            # The Basic challenge is what makes a browser show its login prompt.
            challenges = refused.headers.getall("WWW-Authenticate")
            assert challenges[0].startswith("Basic realm=")
        status, body = await _get(base + "/metrics")
        assert status == 200
        assert "datalayer_" in body


async def test_with_mtls_the_metrics_port_speaks_tls_and_wants_a_client_cert(
    tmp_path: Path,
) -> None:
    import ssl

    import aiohttp

    ca, server, client_pem = make_pki(tmp_path)
    tls = TlsFiles(server.cert, server.key, client_ca=ca.cert)
    async with running_stack(tmp_path, tls=tls) as stack:
        port = stack.app.metrics_port
        with pytest.raises(aiohttp.ClientError):
            await _get(f"http://127.0.0.1:{port}/status.json")
        anonymous = ssl.create_default_context(cafile=str(ca.cert))
        with pytest.raises(aiohttp.ClientError):
            await _get(f"https://127.0.0.1:{port}/status.json", ssl=anonymous)
        with_cert = ssl.create_default_context(cafile=str(ca.cert))
        with_cert.load_cert_chain(str(client_pem.cert), str(client_pem.key))
        status, body = await _get(f"https://127.0.0.1:{port}/status.json", ssl=with_cert)
        assert status == 200
        assert "endpoints" in body


async def test_without_auth_the_status_pages_stay_open(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        status, _ = await _get(f"http://127.0.0.1:{stack.app.metrics_port}/status.json")
        assert status == 200
