"""The fake API server with InferencePools beside pods, on one address.

Each resource is its own `FakeKubeApi` (its own objects, history, watches and 410s), so the
same list/watch protocol serves `/api/v1/namespaces/{ns}/pods` and
`/apis/inference.networking.k8s.io/v1/namespaces/{ns}/inferencepools`; the test drives
`pods` and `pools` as it drives a `FakeKubeApi`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fake_kube_api import FakeKubeApi

POOLS_PATH = "/apis/inference.networking.k8s.io/v1/namespaces/{namespace}/inferencepools"


def make_pool(
    name: str,
    match_labels: dict[str, str],
    ports: list[int],
    namespace: str = "default",
    expressions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An InferencePool (inference.networking.k8s.io/v1) as the API server returns it."""
    selector: dict[str, Any] = {"matchLabels": dict(match_labels)}
    if expressions:
        selector["matchExpressions"] = expressions
    return {
        "apiVersion": "inference.networking.k8s.io/v1",
        "kind": "InferencePool",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-pool-{name}",
            "generation": 1,
            "creationTimestamp": "2026-11-30T09:00:00Z",
        },
        "spec": {
            "selector": selector,
            "targetPorts": [{"number": port} for port in ports],
            "endpointPickerRef": {
                "group": "",
                "kind": "Service",
                "name": f"{name}-epp",
                "port": {"number": 9002},
                "failureMode": "FailClose",
            },
        },
        "status": {"parents": []},
    }


class FakeCluster:
    def __init__(self) -> None:
        self.pods = FakeKubeApi()
        self.pools = FakeKubeApi()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{namespace}/pods", self.pods._handle)
        app.router.add_get(POOLS_PATH, self.pools._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self.pods.url = self.pools.url = self.url
        return self.url

    async def close(self) -> None:
        self.pods.end_watches()
        self.pools.end_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    def kubeconfig(self) -> str:
        return self.pods.kubeconfig()
