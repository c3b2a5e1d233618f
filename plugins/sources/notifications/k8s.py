"""`k8s-notification-source`: add/update/delete events of one Kubernetes kind.

Objects of the kind (`group` "" for the core group, `version`, `kind`) in `namespace` are
listed, then watched from the list's resourceVersion, with resume after a dropped watch and
a relist after 410 Gone: the same reflector as `kubernetes-pod-discovery`. A relist reports
`add-or-update` for every listed object and `delete` for one seen before and missing now, so
nothing deleted while the watch was away is kept by an extractor. A delete carries only the
object's name and namespace, as upstream's.

Each event goes to every extractor's `on_object`, in order; for a Pod, also to `extract` for
each endpoint of that pod this source serves (so an extractor can stamp attributes on it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import httpx2
from lightkube import AsyncClient, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources import core_v1

from datalayer.model import EndpointSpec
from datalayer.notifications import (
    GroupVersionKind,
    NotificationSource,
    ObjectEvent,
    ObjectEventExtractor,
)
from datalayer.parameters import Duration, FilePath, NonEmptyStr, Parameters
from datalayer.plugin import DiscoverySink, Extractor, ParameterError, PayloadSink
from plugins.discovery.kubernetes.reflector import Backoff, PodReflector, SyncOnlySink

log = logging.getLogger(__name__)


class K8sNotificationParameters(Parameters):
    #: The API group; "" is the core group (Pod, Service, ConfigMap ...).
    group: str = ""
    version: NonEmptyStr = "v1"
    kind: NonEmptyStr = "Pod"
    #: Where objects are watched (upstream: the picker's namespace).
    namespace: str = "default"
    #: Lower-case plural of the kind for the URL; unset: `kind` lower-cased + "s".
    plural: str | None = None
    #: A kubeconfig file; unset: in-cluster config, else $KUBECONFIG, else ~/.kube/config.
    kubeconfig: FilePath | None = None
    backoff_initial: Duration = 0.5
    backoff_max: Duration = 30.0
    watch_timeout: Duration = 300.0
    request_timeout: Duration = 10.0


def resource_for(gvk: GroupVersionKind, plural: str | None) -> Any:
    """The lightkube class for a kind: the typed one for the core group, else a generic one."""
    if not gvk.group and gvk.version == "v1" and hasattr(core_v1, gvk.kind) and plural is None:
        return getattr(core_v1, gvk.kind)
    return create_namespaced_resource(
        gvk.group, gvk.version, gvk.kind, plural or f"{gvk.kind.lower()}s"
    )


class K8sNotificationSource(NotificationSource):
    type_name = "k8s-notification-source"
    description = "add/update/delete events of one Kubernetes kind (list+watch, 410 relist)"
    Parameters = K8sNotificationParameters
    output_type = ObjectEvent

    def __init__(self, name: str, params: K8sNotificationParameters) -> None:
        super().__init__(name, params)
        if params.backoff_max < params.backoff_initial:
            raise ParameterError("backoffMax", "must not be less than backoffInitial")
        self.params: K8sNotificationParameters = params
        self.gvk = GroupVersionKind(params.group, params.version, params.kind)
        self._extractors: list[Extractor] = []
        self._endpoints: dict[str, EndpointSpec] = {}
        #: (namespace, name) of every object reported, so a relist can report what vanished.
        self._seen: set[tuple[str, str]] = set()

    def start(self, extractors: Sequence[Extractor]) -> None:
        self._extractors = list(extractors)

    def update_endpoints(self, endpoints: Mapping[str, EndpointSpec]) -> None:
        self._endpoints = dict(endpoints)

    async def run(self, sink: PayloadSink) -> None:
        params = self.params
        client = await asyncio.to_thread(self._new_client)
        try:
            reflector = PodReflector(
                client,
                SyncOnlySink(),
                _EventTracker(self, sink),
                namespace=params.namespace,
                labels=None,
                backoff=Backoff(params.backoff_initial, params.backoff_max),
                watch_timeout=params.watch_timeout,
                resource=resource_for(self.gvk, params.plural),
            )
            await reflector.run()
        finally:
            await client.close()

    def _new_client(self) -> AsyncClient:
        p = self.params
        config = KubeConfig.from_file(p.kubeconfig) if p.kubeconfig else None
        return AsyncClient(
            config=config, namespace=p.namespace, timeout=httpx2.Timeout(p.request_timeout)
        )

    def dispatch(self, event: ObjectEvent, sink: PayloadSink) -> None:
        """One event to every extractor's `on_object`, then to the endpoints of its pod."""
        for extractor in self._extractors:
            if isinstance(extractor, ObjectEventExtractor):
                try:
                    extractor.on_object(event)
                except Exception:
                    log.exception("extractor %s failed on %s", extractor.name, event.name)
        if self.gvk != _POD:
            return
        for spec in list(self._endpoints.values()):
            if (spec.pod_name or spec.name) == event.name and spec.namespace in (
                "",
                event.namespace,
            ):
                sink.deliver(spec.name, event)


_POD = GroupVersionKind("", "v1", "Pod")


class _EventTracker:
    """The reflector's tracker: list results and watch events become `ObjectEvent`s."""

    def __init__(self, source: K8sNotificationSource, sink: PayloadSink) -> None:
        self._source = source
        self._sink = sink

    @property
    def endpoint_count(self) -> int:
        return len(self._source._seen)

    def _event(self, kind: str, item: Any) -> ObjectEvent:
        raw = item.to_dict() if hasattr(item, "to_dict") else dict(item)
        meta = raw.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if kind == "delete":
            self._source._seen.discard(key)
            raw = {"metadata": {"namespace": key[0], "name": key[1]}}
        else:
            self._source._seen.add(key)
        return ObjectEvent(kind, self._source.gvk, raw)  # type: ignore[arg-type]

    async def resync(self, sink: DiscoverySink, items: Any) -> None:
        before = set(self._source._seen)
        events = [self._event("add-or-update", item) for item in items]
        listed = {(e.namespace, e.name) for e in events}
        for namespace, name in sorted(before - listed):
            gone = {"metadata": {"namespace": namespace, "name": name}}
            events.insert(0, self._event("delete", gone))
        for event in events:
            self._source.dispatch(event, self._sink)

    async def apply(self, sink: DiscoverySink, event_type: str, item: Any) -> None:
        kind = "delete" if event_type == "DELETED" else "add-or-update"
        self._source.dispatch(self._event(kind, item), self._sink)
