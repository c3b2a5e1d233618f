"""From pods to endpoints, and from pod events to the smallest set of sink calls.

Kept apart from the list/watch loop so the mapping rules (readiness, ranks, active ports)
read in one place and are tested without a server. The rules are upstream's (the EPP's pod
reconciler in llm-d-inference-scheduler):

- a pod is an endpoint only when it is Ready (condition `Ready=True`), has a pod IP and is
  not being deleted (`deletionTimestamp` unset);
- it yields one endpoint per target port, named `<pod>-rank-<i>` where `i` is the port's
  index in `targetPorts`, even when there is only one port (`<pod>-rank-0`);
- the `llm-d.ai/active-ports` annotation (or the legacy
  `inference.networking.k8s.io/active-ports`), a comma list of ports, narrows the ranks a
  pod serves; the remaining ranks keep their index, so names never shift.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from lightkube.resources.core_v1 import Pod

from datalayer.model import EndpointSpec
from datalayer.plugin import DiscoverySink

log = logging.getLogger(__name__)

#: Annotations that list the ports a pod actually serves, newest name first (as upstream).
ACTIVE_PORTS_ANNOTATIONS = ("llm-d.ai/active-ports", "inference.networking.k8s.io/active-ports")


def endpoint_name(pod_name: str, rank: int) -> str:
    """Upstream's endpoint name for the `rank`-th target port of a pod."""
    return f"{pod_name}-rank-{rank}"


def not_ready_reason(pod: Pod) -> str | None:
    """Why `pod` cannot serve traffic (for logs), or None when it is a ready endpoint."""
    if pod.metadata is not None and pod.metadata.deletionTimestamp is not None:
        return "being deleted"
    status = pod.status
    if status is None:
        return "no status yet"
    for condition in status.conditions or ():
        if condition.type == "Ready":
            if condition.status != "True":
                return "not ready"
            break
    else:
        return f"not ready (phase {status.phase or 'unknown'})"
    if not status.podIP:
        return "no pod IP"
    return None


def active_ports(annotations: Mapping[str, str] | None, target_ports: Sequence[int]) -> set[int]:
    """The target ports a pod serves: all of them unless an active-ports annotation narrows them.

    Entries that are not integers or not target ports are ignored, as upstream does.
    """
    text = None
    for key in ACTIVE_PORTS_ANNOTATIONS:
        if annotations and key in annotations:
            text = annotations[key]
            break
    if text is None:
        return set(target_ports)
    wanted: set[int] = set()
    for part in text.split(","):
        try:
            port = int(part.strip())
        except ValueError:
            continue
        if port in target_ports:
            wanted.add(port)
    return wanted


def pod_endpoints(
    pod: Pod, target_ports: Sequence[int], default_namespace: str
) -> dict[str, EndpointSpec]:
    """The endpoints `pod` stands for right now, by name (empty when it is not ready)."""
    meta, status = pod.metadata, pod.status
    if meta is None or not meta.name or status is None or not status.podIP:
        return {}
    if not_ready_reason(pod) is not None:
        return {}
    address = status.podIP
    labels = dict(meta.labels or {})
    namespace = meta.namespace or default_namespace
    ports = active_ports(meta.annotations, target_ports)
    specs = {}
    for rank, port in enumerate(target_ports):
        if port in ports:
            name = endpoint_name(meta.name, rank)
            specs[name] = EndpointSpec(
                name,
                address,
                port,
                namespace,
                labels,
                node_address=status.hostIP or "",
                pod_name=meta.name,
                rank=rank,
            )
    return specs


class EndpointTracker:
    """What has been reported to the sink, per pod, so each pod event becomes a minimal diff.

    A status-only change (a container restart count, say) upserts nothing; a relabel upserts
    the same names (the collector keeps its tasks); an unready or deleted pod deletes exactly
    the names it had. The state is updated only after the sink calls return, so a failure
    half-way is repaired by the relist that follows it.
    """

    def __init__(self, target_ports: Sequence[int], namespace: str) -> None:
        self._target_ports = tuple(target_ports)
        self._namespace = namespace
        self._by_pod: dict[str, dict[str, EndpointSpec]] = {}

    @property
    def endpoint_count(self) -> int:
        return sum(len(specs) for specs in self._by_pod.values())

    async def resync(self, sink: DiscoverySink, pods: Iterable[Pod]) -> None:
        """Report the full set from a list (`replace_all`), forgetting what came before."""
        by_pod: dict[str, dict[str, EndpointSpec]] = {}
        for pod in pods:
            if pod.metadata is None or not pod.metadata.name:
                log.warning("ignoring a listed pod without a name")
                continue
            specs = pod_endpoints(pod, self._target_ports, self._namespace)
            if specs:
                by_pod[pod.metadata.name] = specs
        await sink.replace_all([spec for specs in by_pod.values() for spec in specs.values()])
        self._by_pod = by_pod

    async def apply(self, sink: DiscoverySink, event_type: str, pod: Pod) -> None:
        """Apply one ADDED, MODIFIED or DELETED event for `pod` to the sink."""
        if pod.metadata is None or not pod.metadata.name:
            log.warning("ignoring a %s event for a pod without a name", event_type)
            return
        pod_name = pod.metadata.name
        old = self._by_pod.get(pod_name, {})
        if event_type == "DELETED":
            new: dict[str, EndpointSpec] = {}
            reason = "deleted"
        else:
            new = pod_endpoints(pod, self._target_ports, self._namespace)
            reason = not_ready_reason(pod) or "no active target port"
        for name in sorted(old.keys() - new.keys()):
            await sink.delete(name)
        for name, spec in new.items():
            if old.get(name) != spec:
                await sink.upsert(spec)
        if new:
            self._by_pod[pod_name] = new
        else:
            self._by_pod.pop(pod_name, None)
        if new and not old:
            log.info("pod %s is an endpoint: %s", pod_name, ", ".join(sorted(new)))
        elif old and not new:
            log.info("pod %s is no longer an endpoint (%s)", pod_name, reason)
        elif new != old:
            log.debug("pod %s changed: %s", pod_name, ", ".join(sorted(new)))
