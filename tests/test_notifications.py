"""endpoint-notification-source, k8s-notification-source and topology-extractor (issue 14
items 1 and 4): events in order, type-checked wiring, never stale, and the Pod watch against
the fake API server (list, watch, 410 relist)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from datalayer.config import ConfigError, load_config_text
from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.notifications import EndpointEvent, EndpointEventExtractor, ObjectEvent
from datalayer.parameters import Parameters, decode
from datalayer.registry import default_registry
from plugins.extractors.topology import TOPOLOGY, TopologyExtractor
from plugins.sources.notifications import EndpointNotificationSource, K8sNotificationSource

from fake_kube_api import FakeKubeApi, make_pod
from stack import eventually, running_stack


class RecordingSink:
    """A PayloadSink that extracts like the collector does and keeps what landed."""

    def __init__(self, extractors: list[Any], served: set[str] | None = None) -> None:
        self.extractors = extractors
        self.served = served
        self.attributes: dict[str, dict[str, Any]] = {}

    def deliver(self, endpoint_name: str, payload: Any) -> bool:
        if self.served is not None and endpoint_name not in self.served:
            return False
        spec = payload.endpoint if isinstance(payload, EndpointEvent) else self.specs[endpoint_name]
        out = EndpointUpdate()
        for extractor in self.extractors:
            extractor.extract(payload, spec, out)
        self.attributes.setdefault(endpoint_name, {}).update(out.attributes)
        return True

    specs: dict[str, EndpointSpec] = {}


class NoParams(Parameters):
    pass


class Recorder(EndpointEventExtractor):
    type_name = "recorder"
    Parameters = NoParams

    def __init__(self) -> None:
        super().__init__("recorder", NoParams())
        self.seen: list[tuple[str, str, str]] = []

    def extract(self, payload: EndpointEvent, endpoint: EndpointSpec, out: EndpointUpdate) -> None:
        self.seen.append((payload.type, endpoint.name, endpoint.labels.get("v", "")))


async def test_endpoint_events_are_delivered_in_order_deletes_included() -> None:
    source = EndpointNotificationSource("en", decode(EndpointNotificationSource.Parameters, {}))
    recorder = Recorder()
    source.start([recorder])
    sink = RecordingSink([recorder])
    task = asyncio.create_task(source.run(sink))
    try:
        a, b = EndpointSpec("a", "10.0.0.1", 8000), EndpointSpec("b", "10.0.0.2", 8000)
        source.update_endpoints({"a": a, "b": b})
        source.update_endpoints(
            {"a": a, "b": EndpointSpec("b", "10.0.0.2", 8000, labels={"v": "2"})}
        )
        source.update_endpoints({"b": EndpointSpec("b", "10.0.0.2", 8000, labels={"v": "2"})})
        source.update_endpoints({})

        async def all_seen() -> bool:
            return len(recorder.seen) == 5

        await eventually(all_seen, timeout=2, what="five events")
    finally:
        task.cancel()
    assert recorder.seen == [
        ("add-or-update", "a", ""),
        ("add-or-update", "b", ""),
        ("add-or-update", "b", "2"),  # a relabel is an update; an unchanged `a` is not
        ("delete", "a", ""),
        ("delete", "b", "2"),
    ]


NOTIFY = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
- type: core-metrics-extractor
- type: endpoint-notification-source
- type: topology-extractor
- type: file-discovery
  parameters: {{path: {endpoints}, pollInterval: 50ms}}
dataLayer:
  interval: 50ms
  timeout: 300ms
  stalenessThreshold: 500ms
  sources:
  - pluginRef: metrics-data-source
    extractors: [{{pluginRef: core-metrics-extractor}}]
  - pluginRef: endpoint-notification-source
    extractors: [{{pluginRef: topology-extractor}}]
  discovery: {{pluginRef: file-discovery}}
"""


async def test_topology_through_the_service_and_the_endpoint_stays_fresh(tmp_path: Path) -> None:
    async with running_stack(tmp_path, NOTIFY) as stack:
        pod = stack.pods.pods[0]
        entry = {
            "name": pod.spec.name,
            "address": "127.0.0.1",
            "port": pod.port,
            "labels": {
                "app": "vllm",
                "kubernetes.io/hostname": "gpu-node-3",
                "topology.kubernetes.io/zone": "us-east1-b",
                "topology.kubernetes.io/region": "us-east1",
            },
        }
        stack.endpoints_file.write_text(yaml.safe_dump({"endpoints": [entry]}))

        async def stamped() -> bool:
            try:
                endpoint = await stack.client.get_endpoint(pod.spec.name)
            except Exception:
                return False
            return TOPOLOGY in endpoint.attributes and "gpu-node-3" in str(endpoint.attributes)

        await eventually(stamped, what="the Topology attribute")
        await asyncio.sleep(1.0)  # twice the staleness threshold, with no endpoint event
        endpoint = await stack.client.get_endpoint(pod.spec.name)
        assert not endpoint.stale, endpoint.last_error
        fields = endpoint.attributes[TOPOLOGY].object.struct_value.fields
        assert {k: v.string_value for k, v in fields.items()} == {
            "hostname": "gpu-node-3",
            "rack": "",
            "zone": "us-east1-b",
            "region": "us-east1",
        }


WIRING = """\
kind: DataLayerConfig
plugins:
- type: metrics-data-source
- type: core-metrics-extractor
- type: endpoint-notification-source
- type: k8s-notification-source
  name: pods
- type: topology-extractor
- type: file-discovery
  parameters: {path: /dev/null, watchFile: false}
dataLayer:
  sources:
  - pluginRef: SOURCE
    extractors: [{pluginRef: EXTRACTOR}]
  discovery: {pluginRef: file-discovery}
"""


@pytest.mark.parametrize(
    ("source", "extractor", "problem"),
    [
        ("endpoint-notification-source", "core-metrics-extractor", "produces EndpointEvent"),
        ("pods", "core-metrics-extractor", "produces ObjectEvent"),
        ("metrics-data-source", "topology-extractor", "takes NotificationEvent"),
    ],
)
def test_wiring_is_type_checked_at_load(source: str, extractor: str, problem: str) -> None:
    text = WIRING.replace("SOURCE", source).replace("EXTRACTOR", extractor)
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, default_registry())
    assert problem in caught.value.message
    assert caught.value.path == "dataLayer.sources[0].extractors[0].pluginRef"


def test_topology_wires_under_both_notification_sources() -> None:
    for source in ("endpoint-notification-source", "pods"):
        text = WIRING.replace("SOURCE", source).replace("EXTRACTOR", "topology-extractor")
        (binding,) = load_config_text(text, default_registry()).sources
        assert binding.source.name == source


def test_one_source_per_kind() -> None:
    text = WIRING.replace("SOURCE", "pods").replace("EXTRACTOR", "topology-extractor")
    text = text.replace(
        "- type: topology-extractor\n",
        "- type: topology-extractor\n- type: k8s-notification-source\n  name: pods-again\n",
    )
    with pytest.raises(ConfigError, match="'pods-again' watches core/v1/Pod like 'pods'"):
        load_config_text(text, default_registry())


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[tuple[FakeKubeApi, Path]]:
    api = FakeKubeApi()
    await api.start()
    config = tmp_path / "kubeconfig"
    config.write_text(api.kubeconfig())
    yield api, config
    await api.close()


def pod_with_hostname(name: str, hostname: str, *, ready: bool = True) -> dict[str, Any]:
    pod = make_pod(name, "10.0.0.9", {"app": "vllm"}, ready=ready)
    pod["spec"]["hostname"] = hostname
    pod["spec"]["subdomain"] = "vllm"
    return pod


class ObjectRecorder(TopologyExtractor):
    """The topology extractor, also recording the events it is told about."""

    def __init__(self) -> None:
        super().__init__("topology-extractor", TopologyExtractor.Parameters())
        self.events: list[tuple[str, str, bool]] = []

    def on_object(self, event: ObjectEvent) -> None:
        self.events.append((event.type, event.name, "spec" in event.object))
        super().on_object(event)


async def test_pod_events_from_the_api_server_feed_the_hostname_fallback(
    kube: tuple[FakeKubeApi, Path],
) -> None:
    api, kubeconfig = kube
    api.apply(pod_with_hostname("vllm-0", "vllm-0-host"))
    source = K8sNotificationSource(
        "pods",
        decode(
            K8sNotificationSource.Parameters,
            {"kubeconfig": str(kubeconfig), "backoffInitial": 0.05},
        ),
    )
    extractor = ObjectRecorder()
    source.start([extractor])
    spec = EndpointSpec("vllm-0-rank-0", "10.0.0.9", 8000, "default", pod_name="vllm-0")
    RecordingSink.specs = {spec.name: spec}
    sink = RecordingSink([extractor], served={spec.name})
    source.update_endpoints({spec.name: spec})
    task = asyncio.create_task(source.run(sink))
    try:

        async def stamped() -> bool:
            topology = sink.attributes.get(spec.name, {}).get(TOPOLOGY, {})
            return bool(topology.get("hostname") == "vllm-0-host")

        await eventually(stamped, what="hostname from spec.hostname")
        api.apply(pod_with_hostname("vllm-1", "vllm-1-host"))
        await eventually(
            lambda: _async(("add-or-update", "vllm-1", True) in extractor.events),
            what="watch ADDED",
        )
        # A deletion missed while the watch was away, behind a compaction: 410, relist.
        api.end_watches()
        api.delete("vllm-1")
        api.compact()
        api.expire_watches()
        await eventually(
            lambda: _async(("delete", "vllm-1", False) in extractor.events),
            what="the delete found by the relist",
        )
        assert ("default", "vllm-1") not in extractor._hostnames
        api.apply(pod_with_hostname("vllm-0", "vllm-0-host", ready=False))
        await eventually(
            lambda: _async(("default", "vllm-0") not in extractor._hostnames),
            what="an unready pod forgotten",
        )
    finally:
        task.cancel()
    assert any(r.kind == "list" for r in api.requests[1:])  # relisted after 410


async def _async(value: bool) -> bool:
    return value
