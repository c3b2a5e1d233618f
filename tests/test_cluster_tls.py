"""A replica group whose members serve TLS with client certificates (mTLS): the members'
links present the server certificate and trust the client CA, so the group forms."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from cluster_stack import Replica, group_config, pod_process, write_endpoints

from datalayer.client import ClientTls, DataLayerClient

from certs import make_pki
from stack import eventually, free_port

PODS = 8


async def test_a_group_over_mtls_forms_and_serves_every_endpoint(tmp_path: Path) -> None:
    ca, server, client = make_pki(tmp_path)
    tls = ClientTls(ca.cert.read_bytes(), client.cert.read_bytes(), client.key.read_bytes())
    flags = ["--tls-cert", str(server.cert), "--tls-key", str(server.key)]
    flags += ["--tls-client-ca", str(ca.cert)]
    async with pod_process(PODS) as pods:
        endpoints = tmp_path / "endpoints.yaml"
        write_endpoints(endpoints, pods)
        ports = [free_port(), free_port()]
        peers = [f"127.0.0.1:{port}" for port in ports]
        replicas = [
            Replica(
                group_config(tmp_path, endpoints, {"self": peer, "peers": peers}, f"t{i}"),
                port,
                extra=flags,
            )
            for i, (port, peer) in enumerate(zip(ports, peers, strict=True))
        ]
        try:
            for replica in replicas:
                await replica.start()
            views: list[dict[str, str]] = []

            async def formed() -> bool:
                nonlocal views
                views = []
                for replica in replicas:
                    try:
                        async with DataLayerClient(replica.target, tls=tls) as c:
                            listed = (await c.list_endpoints(timeout=2)).endpoints
                    except Exception:
                        return False
                    if len(listed) != PODS or any(e.stale for e in listed):
                        return False
                    views.append({e.name: e.owner for e in listed})
                return views[0] == views[1] and set(views[0].values()) == set(peers)

            await eventually(formed, timeout=20, what="a group over mTLS")
            assert sum(Counter(views[0].values()).values()) == PODS
        finally:
            for replica in replicas:
                await replica.stop()
