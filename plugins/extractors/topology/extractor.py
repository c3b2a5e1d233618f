"""`topology-extractor`: where an endpoint runs, for locality-aware scheduling.

Upstream's rules: each field is read from a pod label whose name is a parameter (defaults:
the standard Kubernetes topology labels); when the hostname label is absent, the pod's
`spec.hostname` is the fallback, learnt from Pod events; zone, rack and region have none.

It takes both notification kinds, so it is wired twice, as upstream registers it twice:
under an `endpoint-notification-source` (labels, on every add-or-update) and, for the
fallback, under a `k8s-notification-source` of `v1` `Pod` (spec.hostname of ready pods,
forgotten when the pod is deleted or not ready). The attribute `Topology` is a mapping with
the four fields ("" when unknown), set only when at least one is known.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.notifications import (
    EndpointEvent,
    NotificationEvent,
    ObjectEvent,
    ObjectEventExtractor,
)
from datalayer.parameters import Parameters

#: Upstream's attribute key.
TOPOLOGY: Final = "Topology"


class TopologyParameters(Parameters):
    #: The pod label holding each field ("" = the default, as upstream).
    hostname: str = "kubernetes.io/hostname"
    rack: str = "topology.kubernetes.io/rack"
    zone: str = "topology.kubernetes.io/zone"
    region: str = "topology.kubernetes.io/region"


_DEFAULTS: Final = TopologyParameters()


class TopologyExtractor(ObjectEventExtractor):
    type_name = "topology-extractor"
    description: ClassVar[str] = (
        "hostname/rack/zone/region from pod labels (spec.hostname fallback) -> Topology"
    )
    Parameters = TopologyParameters
    #: Both event kinds: wire it under an endpoint and a Pod notification source.
    input_type: ClassVar[type] = NotificationEvent

    def __init__(self, name: str, params: TopologyParameters) -> None:
        super().__init__(name, params)
        self.labels = {
            field: getattr(params, field) or getattr(_DEFAULTS, field)
            for field in ("hostname", "rack", "zone", "region")
        }
        #: (namespace, pod) -> spec.hostname of a ready pod.
        self._hostnames: dict[tuple[str, str], str] = {}

    def produced_attributes(self) -> frozenset[str]:
        return frozenset({TOPOLOGY})

    def on_object(self, event: ObjectEvent) -> None:
        key = (event.namespace, event.name)
        hostname = _spec_hostname(event.object) if event.type == "add-or-update" else ""
        if hostname and _ready(event.object):
            self._hostnames[key] = hostname
        else:
            self._hostnames.pop(key, None)

    def extract(self, payload: Any, endpoint: EndpointSpec, out: EndpointUpdate) -> None:
        if isinstance(payload, EndpointEvent) and payload.type == "delete":
            return
        if not isinstance(payload, EndpointEvent | ObjectEvent):
            return
        labels = endpoint.labels
        topology = {field: labels.get(label, "") for field, label in self.labels.items()}
        if not topology["hostname"]:
            pod = endpoint.pod_name or endpoint.name
            topology["hostname"] = self._hostnames.get((endpoint.namespace, pod), "")
        if any(topology.values()):
            out.set_attribute(TOPOLOGY, topology)


def _spec_hostname(obj: Any) -> str:
    spec = obj.get("spec") or {}
    value = spec.get("hostname")
    return value if isinstance(value, str) else ""


def _ready(obj: Any) -> bool:
    for condition in (obj.get("status") or {}).get("conditions") or ():
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False
