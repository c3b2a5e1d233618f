"""`kubernetes-pod-discovery` from an InferencePool: the pool says which pods and ports.

As upstream's picker does, the pool (`inference.networking.k8s.io/v1` `InferencePool`) is
read for its `spec.selector` (`matchLabels`, and `matchExpressions` if present) and its
`spec.targetPorts[].number`, and followed: the pool is listed and watched like the pods
are (same reflector, resume, 410 relist), and when its selector or ports change the pod
reflector is restarted with the new ones, whose first list replaces the endpoint set (pods
that no longer match go). A deleted pool, or one whose spec is unusable, empties the set
and says why, until the pool is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from lightkube import AsyncClient
from lightkube.core.client import LabelSelector
from lightkube.generic_resource import create_namespaced_resource

from datalayer.parameters import NonEmptyStr, Parameters
from datalayer.plugin import DiscoverySink
from datalayer.selector import Selector, SelectorError, parse_selector
from plugins.discovery.kubernetes.pods import EndpointTracker
from plugins.discovery.kubernetes.reflector import Backoff, PodReflector, SyncOnlySink

log = logging.getLogger(__name__)

POOL_GROUP: Final = "inference.networking.k8s.io"
POOL_VERSION: Final = "v1"
InferencePool = create_namespaced_resource(
    POOL_GROUP, POOL_VERSION, "InferencePool", "inferencepools"
)
_OPERATORS: Final = {"In": "in", "NotIn": "notin"}


class InferencePoolRef(Parameters):
    """Which pool: its name, and its namespace ("" = the discovery's `namespace`)."""

    name: NonEmptyStr
    namespace: str = ""


@dataclass(frozen=True)
class PoolSpec:
    """What discovery needs of a pool: the pods' label selector (Kubernetes syntax) and ports."""

    selector: str
    target_ports: tuple[int, ...]


def pool_spec(pool: dict[str, Any]) -> PoolSpec:
    """Read a pool object; ValueError saying what is wrong when it cannot be used."""
    spec = pool.get("spec") or {}
    selector = spec.get("selector") or {}
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op in _OPERATORS:
            parts.append(f"{key} {_OPERATORS[op]} ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
        else:
            raise ValueError(f"spec.selector: unknown operator {op!r}")
    if not parts:
        raise ValueError("spec.selector selects nothing (no matchLabels)")
    text = ",".join(parts)
    try:
        parse_selector(text)
    except SelectorError as exc:
        raise ValueError(f"spec.selector: {exc}") from None
    ports: list[int] = []
    for i, entry in enumerate(spec.get("targetPorts") or ()):
        number = entry.get("number") if isinstance(entry, dict) else None
        if not isinstance(number, int) or not 0 < number < 65536 or number in ports:
            raise ValueError(f"spec.targetPorts[{i}].number: {number!r} is not a new port")
        ports.append(number)
    if not ports:
        raise ValueError("spec.targetPorts is empty")
    return PoolSpec(text, tuple(ports))


class PoolFollower:
    """Keeps one pod reflector running for the pool's current selector and ports."""

    def __init__(
        self,
        client: AsyncClient,
        sink: DiscoverySink,
        *,
        pool: str,
        pool_namespace: str,
        namespace: str,
        backoff: tuple[float, float],
        watch_timeout: float,
        labels_for: Callable[[Selector], LabelSelector | None],
    ) -> None:
        #: The selector as lightkube wants it (discovery's converter, passed in: no cycle).
        self._labels_for = labels_for
        self._client = client
        self._sink = sink
        self._pool = pool
        self._pool_namespace = pool_namespace
        self._namespace = namespace
        self._backoff = backoff
        self._watch_timeout = watch_timeout
        self.current: PoolSpec | None = None
        self._pods: asyncio.Task[None] | None = None

    async def run(self) -> None:
        reflector = PodReflector(
            self._client,
            SyncOnlySink(),
            self,
            namespace=self._pool_namespace,
            labels=None,
            backoff=Backoff(*self._backoff),
            watch_timeout=self._watch_timeout,
            resource=InferencePool,
        )
        try:
            await reflector.run()
        finally:
            await self._stop_pods()

    # -- the pool reflector's tracker ----------------------------------------------------

    @property
    def endpoint_count(self) -> int:
        return 0 if self.current is None else 1

    async def resync(self, sink: DiscoverySink, items: Any) -> None:
        mine = [p for p in items if _name(p) == self._pool]
        await self._follow(mine[0] if mine else None)

    async def apply(self, sink: DiscoverySink, event_type: str, item: Any) -> None:
        if _name(item) == self._pool:
            await self._follow(None if event_type == "DELETED" else item)

    # -- following ------------------------------------------------------------------------

    async def _follow(self, pool: Any) -> None:
        where = f"InferencePool {self._pool_namespace}/{self._pool}"
        spec: PoolSpec | None = None
        if pool is None:
            log.warning("%s does not exist: no endpoints until it does", where)
        else:
            raw = pool.to_dict() if hasattr(pool, "to_dict") else dict(pool)
            try:
                spec = pool_spec(raw)
            except ValueError as exc:
                log.warning("%s cannot be used: %s; no endpoints until it is fixed", where, exc)
        if spec == self.current and (spec is None) == (self._pods is None):
            return
        await self._stop_pods()
        self.current = spec
        if spec is None:
            await self._sink.replace_all([])
            return
        log.info("%s selects %r on ports %s", where, spec.selector, list(spec.target_ports))
        pods = PodReflector(
            self._client,
            self._sink,
            EndpointTracker(spec.target_ports, self._namespace),
            namespace=self._namespace,
            labels=self._labels_for(parse_selector(spec.selector)),
            backoff=Backoff(*self._backoff),
            watch_timeout=self._watch_timeout,
        )
        self._pods = asyncio.create_task(pods.run(), name=f"pods of {where}")

    async def _stop_pods(self) -> None:
        task, self._pods = self._pods, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # not `await task`: our own cancellation must pass


def _name(item: Any) -> str:
    meta = item.get("metadata") if isinstance(item, dict) else getattr(item, "metadata", None)
    if isinstance(meta, dict):
        return str(meta.get("name", ""))
    return str(getattr(meta, "name", "") or "")
