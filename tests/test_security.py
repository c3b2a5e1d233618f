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
