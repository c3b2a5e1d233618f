"""`kubernetes-pod-discovery`: the ready pods of a namespace that match a label selector.

As upstream's EPP does for an InferencePool: each ready pod yields one endpoint per target
port, named `<pod>-rank-<i>`, with the pod's labels (the engine label such as
`llm-d.ai/engine-type` included) passed through. Pods are listed, then watched from the
list's resourceVersion; see `reflector.py` for the protocol and `pods.py` for the rules.

Nothing here touches the network or the filesystem before `run()`: the config loader builds
plugins only to validate them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from typing import Annotated

import httpx2
import msgspec
from lightkube import AsyncClient, KubeConfig, operators
from lightkube.core.client import LabelSelector

from datalayer.parameters import Parameters, Port, PositiveDuration
from datalayer.plugin import Discovery, DiscoverySink, ParameterError
from datalayer.selector import Selector, SelectorError, parse_selector
from plugins.discovery.kubernetes.pods import EndpointTracker
from plugins.discovery.kubernetes.pool import InferencePoolRef, PoolFollower
from plugins.discovery.kubernetes.reflector import Backoff, PodReflector, describe

log = logging.getLogger(__name__)

_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_NOT_A_NAMESPACE = "{value!r} is not a namespace name (RFC 1123 label)"


class KubernetesDiscoveryParameters(Parameters):
    #: Endpoint i of a pod uses targetPorts[i] and is named `<pod>-rank-<i>`; required
    #: unless `inferencePool` gives them.
    target_ports: list[Port] = []
    namespace: Annotated[
        str,
        msgspec.Meta(
            max_length=63, pattern=f"^{_NAMESPACE.pattern}$", extra={"error": _NOT_A_NAMESPACE}
        ),
    ] = "default"
    #: Kubernetes syntax (`app=vllm,tier in (a,b)`), evaluated by the API server.
    label_selector: str = ""
    #: A kubeconfig file; unset: in-cluster config, else $KUBECONFIG, else ~/.kube/config.
    kubeconfig: (
        Annotated[
            str,
            msgspec.Meta(
                min_length=1, extra={"error": "must not be empty (omit it for the default)"}
            ),
        ]
        | None
    ) = None
    #: First delay before retrying a failed list or watch; doubles up to backoffMax.
    backoff_initial: PositiveDuration = 0.5
    backoff_max: PositiveDuration = 30.0
    #: A watch is closed and resumed after this long, so a dead connection is noticed.
    watch_timeout: PositiveDuration = 300.0
    #: Connect/read timeout of each API request (a watch has no read timeout).
    request_timeout: PositiveDuration = 10.0
    #: Take the pods' selector and target ports from this InferencePool and follow it.
    inference_pool: InferencePoolRef | None = None


def label_selector_for_lightkube(selector: Selector) -> LabelSelector | None:
    """The selector as lightkube's mapping of key to operator, which it encodes back to text."""
    if not selector:
        return None
    labels: LabelSelector = {}
    for req in selector.requirements:
        values = sorted(req.values)
        if req.operator == "=":
            labels[req.key] = operators.equal(values[0])
        elif req.operator == "!=":
            labels[req.key] = operators.not_equal(values[0])
        elif req.operator == "in":
            labels[req.key] = operators.in_(values)
        elif req.operator == "notin":
            labels[req.key] = operators.not_in(values)
        elif req.operator == "exists":
            labels[req.key] = operators.exists()
        else:
            labels[req.key] = operators.not_exists()
    return labels


class KubernetesPodDiscovery(Discovery):
    type_name = "kubernetes-pod-discovery"
    description = "ready pods matching a label selector, one endpoint per target port (list+watch)"
    Parameters = KubernetesDiscoveryParameters

    def __init__(self, name: str, params: KubernetesDiscoveryParameters) -> None:
        super().__init__(name, params)
        if params.inference_pool is not None and (params.target_ports or params.label_selector):
            raise ParameterError(
                "inferencePool",
                "the pool gives the selector and ports: drop targetPorts, labelSelector",
            )
        if params.inference_pool is None and not params.target_ports:
            raise ParameterError("targetPorts", "must list at least one port")
        for i, port in enumerate(params.target_ports):
            if port in params.target_ports[:i]:
                raise ParameterError(f"targetPorts[{i}]", f"duplicate port {port}")
        try:
            selector = parse_selector(params.label_selector)
        except SelectorError as exc:
            raise ParameterError("labelSelector", str(exc)) from None
        repeated = [k for k, n in Counter(r.key for r in selector.requirements).items() if n > 1]
        if repeated:
            # lightkube takes one operator per key; `a!=x,a!=y` is written `a notin (x,y)`.
            raise ParameterError(
                "labelSelector", f"key {repeated[0]!r} appears twice; use one requirement per key"
            )
        if params.backoff_max < params.backoff_initial:
            raise ParameterError("backoffMax", "must not be less than backoffInitial")
        self.params: KubernetesDiscoveryParameters = params
        self.labels = label_selector_for_lightkube(selector)

    async def run(self, sink: DiscoverySink) -> None:
        backoff = Backoff(self.params.backoff_initial, self.params.backoff_max)
        client = await self._connect(backoff)
        pool = self.params.inference_pool
        if pool is not None:
            try:
                await PoolFollower(
                    client,
                    sink,
                    pool=pool.name,
                    pool_namespace=pool.namespace or self.params.namespace,
                    namespace=self.params.namespace,
                    backoff=(self.params.backoff_initial, self.params.backoff_max),
                    watch_timeout=self.params.watch_timeout,
                    labels_for=label_selector_for_lightkube,
                ).run()
            finally:
                await client.close()
            return
        try:
            reflector = PodReflector(
                client,
                sink,
                EndpointTracker(self.params.target_ports, self.params.namespace),
                namespace=self.params.namespace,
                labels=self.labels,
                backoff=backoff,
                watch_timeout=self.params.watch_timeout,
            )
            await reflector.run()
        finally:
            await client.close()

    async def _connect(self, backoff: Backoff) -> AsyncClient:
        """Build the client, retrying while the configuration cannot be loaded."""
        last_error = None
        while True:
            try:
                # Reads kubeconfig / service-account files and builds an SSL context: blocking.
                client = await asyncio.to_thread(self._new_client)
            except Exception as exc:  # any failure: a missing config may appear later
                error = describe(exc)
                delay = backoff.next()
                if error != last_error:
                    log.error("cannot configure the Kubernetes client: %s; retrying", error)
                    last_error = error
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            log.info(
                "watching pods in namespace %s (selector %r) via %s",
                self.params.namespace,
                self.params.label_selector,
                client.config.cluster.server,
            )
            return client

    def _new_client(self) -> AsyncClient:
        config = KubeConfig.from_file(self.params.kubeconfig) if self.params.kubeconfig else None
        return AsyncClient(
            config=config,
            namespace=self.params.namespace,
            timeout=httpx2.Timeout(self.params.request_timeout),
        )
