"""kubernetes-pod-discovery through lightkube against a local fake API server (real sockets).

No real API server runs on the test machines; `fake_kube_api.FakeKubeApi` speaks the list and
watch protocol (PodList + resourceVersion, newline-delimited watch events, 410 Gone in both
of its forms, dropped connections), so these tests exercise the real client end to end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from lightkube.resources.core_v1 import Pod

from datalayer.model import EndpointSpec
from datalayer.parameters import Duration, ParameterError, decode
from plugins.discovery.kubernetes import KubernetesDiscoveryParameters, KubernetesPodDiscovery
from plugins.discovery.kubernetes.pods import pod_endpoints
from plugins.discovery.kubernetes.reflector import Backoff

from fake_kube_api import FakeKubeApi, make_pod

ENGINE = "llm-d.ai/engine-type"
VLLM = {"app": "vllm", ENGINE: "vllm"}


class RecordingSink:
    """Records every call in order, and the resulting endpoint set."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, Any]] = []
        self.specs: dict[str, EndpointSpec] = {}
        self.synced = asyncio.Event()

    async def upsert(self, spec: EndpointSpec) -> None:
        self.ops.append(("upsert", spec.name))
        self.specs[spec.name] = spec

    async def delete(self, name: str) -> None:
        self.ops.append(("delete", name))
        self.specs.pop(name, None)

    async def replace_all(self, specs: Sequence[EndpointSpec]) -> None:
        self.ops.append(("replace", sorted(s.name for s in specs)))
        self.specs = {s.name: s for s in specs}

    def mark_synced(self) -> None:
        self.ops.append(("synced", None))
        self.synced.set()


async def wait_until(check: Callable[[], bool], what: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def api() -> AsyncIterator[FakeKubeApi]:
    server = FakeKubeApi()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
def kubeconfig(api: FakeKubeApi, tmp_path: Path) -> str:
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(api.kubeconfig())
    return str(path)


def discovery(kubeconfig: str | None, **overrides: Any) -> KubernetesPodDiscovery:
    params: dict[str, Any] = {
        "target_ports": [8000, 8001],
        "kubeconfig": kubeconfig,
        "backoff_initial": Duration(0.02),
        "backoff_max": Duration(0.1),
    }
    params.update(overrides)
    return KubernetesPodDiscovery("pods", KubernetesDiscoveryParameters(**params))


class Running:
    """A discovery's `run` as a task, cancelled and awaited on exit."""

    def __init__(self, plugin: KubernetesPodDiscovery) -> None:
        self.plugin = plugin
        self.sink = RecordingSink()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RecordingSink:
        self.task = asyncio.create_task(self.plugin.run(self.sink))
        return self.sink

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        assert not self.task.done(), "the discovery task ended on its own"
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def watching(api: FakeKubeApi, opened: int) -> None:
    """Wait until the `opened`-th watch stream is open and is the only one."""
    await wait_until(
        lambda: api.watches_opened >= opened and api.open_watches == 1, f"watch #{opened}"
    )


async def synced(api: FakeKubeApi, sink: RecordingSink) -> None:
    """Wait for the first list and for the watch that follows it to be open."""
    await asyncio.wait_for(sink.synced.wait(), 3)
    await watching(api, 1)


async def test_initial_list_reports_ready_pods_one_endpoint_per_target_port(
    api: FakeKubeApi, kubeconfig: str
) -> None:
    api.apply(make_pod("vllm-a", "10.0.0.1", VLLM))
    api.apply(make_pod("vllm-b", "10.0.0.2", {"app": "vllm", ENGINE: "sglang"}))
    api.apply(make_pod("unready", "10.0.0.3", VLLM, ready=False))
    api.apply(make_pod("pending", None, VLLM, phase="Pending"))
    api.apply(make_pod("terminating", "10.0.0.5", VLLM, deleting=True))
    api.apply(make_pod("elsewhere", "10.0.0.6", VLLM, namespace="other"))
    list_version = api.resource_version

    async with Running(discovery(kubeconfig)) as sink:
        await synced(api, sink)
        names = ["vllm-a-rank-0", "vllm-a-rank-1", "vllm-b-rank-0", "vllm-b-rank-1"]
        assert sink.ops == [("replace", names), ("synced", None)]
        assert sink.specs["vllm-a-rank-0"] == EndpointSpec(
            "vllm-a-rank-0", "10.0.0.1", 8000, "default", VLLM, pod_name="vllm-a", rank=0
        )
        assert sink.specs["vllm-a-rank-1"] == EndpointSpec(
            "vllm-a-rank-1", "10.0.0.1", 8001, "default", VLLM, pod_name="vllm-a", rank=1
        )
        assert sink.specs["vllm-b-rank-1"].labels[ENGINE] == "sglang"
        # The watch starts exactly where the list left off.
        assert api.list_requests()[0].namespace == "default"
        assert api.watch_requests()[0].query["resourceVersion"] == list_version


async def test_watch_events_are_applied_in_order(api: FakeKubeApi, kubeconfig: str) -> None:
    api.apply(make_pod("a", "10.0.0.1", VLLM))
    async with Running(discovery(kubeconfig, target_ports=[8000])) as sink:
        await synced(api, sink)
        del sink.ops[:]

        api.apply(make_pod("b", "10.0.0.2", VLLM))  # ADDED
        relabelled = {**VLLM, "lora": "sql"}
        api.apply(make_pod("a", "10.0.0.1", relabelled))  # MODIFIED: labels
        api.apply(make_pod("b", "10.0.0.2", VLLM, phase="Running"))  # MODIFIED: nothing we use
        api.apply(make_pod("b", "10.0.0.2", VLLM, ready=False))  # becomes unready
        api.apply(make_pod("c", "10.0.0.3", VLLM, ready=False))  # ADDED, not ready: nothing
        api.apply(make_pod("c", "10.0.0.3", VLLM))  # becomes ready
        api.apply(make_pod("c", "10.0.0.3", VLLM, deleting=True))  # terminating
        api.apply(make_pod("d", "10.0.0.4", VLLM))
        api.delete("d")  # DELETED
        api.apply(make_pod("e", "10.0.0.5", VLLM))  # the last event, to wait for
        await wait_until(lambda: ("upsert", "e-rank-0") in sink.ops, "the last event")

        assert sink.ops == [
            ("upsert", "b-rank-0"),
            ("upsert", "a-rank-0"),
            ("delete", "b-rank-0"),
            ("upsert", "c-rank-0"),
            ("delete", "c-rank-0"),
            ("upsert", "d-rank-0"),
            ("delete", "d-rank-0"),
            ("upsert", "e-rank-0"),
        ]
        # The relabelled endpoint kept its name (so its collector) and has the new labels.
        assert sink.specs["a-rank-0"].labels == relabelled
        assert sorted(sink.specs) == ["a-rank-0", "e-rank-0"]
        assert len(api.list_requests()) == 1


@pytest.mark.parametrize("gone", ["http-410", "error-event-on-connect", "error-event-in-stream"])
async def test_410_gone_relists_and_converges(api: FakeKubeApi, kubeconfig: str, gone: str) -> None:
    api.apply(make_pod("a", "10.0.0.1", VLLM))
    api.apply(make_pod("b", "10.0.0.2", VLLM))
    async with Running(discovery(kubeconfig, target_ports=[8000])) as sink:
        await synced(api, sink)
        stale_version = api.resource_version
        api.gone_as_event = gone != "http-410"
        # Take the watch away, then change pods while it is gone and forget that history:
        # no event will ever tell the client about these changes; only a relist can.
        if gone == "error-event-in-stream":
            api.expire_watches()
        else:
            api.drop_watches()
        api.delete("b")
        api.apply(make_pod("c", "10.0.0.3", VLLM))
        api.compact()

        await wait_until(lambda: len(api.list_requests()) == 2, "a relist")
        await wait_until(lambda: sorted(sink.specs) == ["a-rank-0", "c-rank-0"], "convergence")
        assert sink.ops[-1] == ("replace", ["a-rank-0", "c-rank-0"])
        assert ("synced", None) not in sink.ops[2:], "mark_synced is called once"
        await watching(api, 2)
        versions = [r.query.get("resourceVersion") for r in api.watch_requests()]
        if gone != "error-event-in-stream":
            assert versions[1] == stale_version, "it first tried to resume"
        assert versions[-1] == api.resource_version, "then watched from the relist"

        api.apply(make_pod("d", "10.0.0.4", VLLM))
        await wait_until(lambda: "d-rank-0" in sink.specs, "events after the relist")


async def test_dropped_connection_resumes_from_the_last_resource_version(
    api: FakeKubeApi, kubeconfig: str, caplog: pytest.LogCaptureFixture
) -> None:
    api.apply(make_pod("a", "10.0.0.1", VLLM))
    async with Running(discovery(kubeconfig, target_ports=[8000])) as sink:
        await synced(api, sink)
        api.apply(make_pod("b", "10.0.0.2", VLLM))
        await wait_until(lambda: "b-rank-0" in sink.specs, "b")
        # A change the watch does not carry (another namespace), then a BOOKMARK: the
        # resume point moves with the bookmark.
        api.apply(make_pod("x", "10.9.9.9", VLLM, namespace="other"))
        api.bookmark()
        bookmark_version = api.resource_version
        # A clean end of stream (a server-side timeout) is resumed by lightkube itself,
        # after it has handed over every event before the end (the bookmark included).
        api.end_watches()
        await wait_until(lambda: len(api.watch_requests()) == 2, "the resumed watch")
        assert api.watch_requests()[1].query["resourceVersion"] == bookmark_version

        await watching(api, 2)
        with caplog.at_level(logging.WARNING):
            api.drop_watches()  # a cut connection surfaces as an error: we resume, after backoff
            api.delete("b")  # happens while disconnected; replayed on resume
            await wait_until(lambda: "b-rank-0" not in sink.specs, "the missed deletion")
        assert api.watch_requests()[2].query["resourceVersion"] == bookmark_version
        assert "failed: RemoteProtocolError" in caplog.text
        assert "resuming" in caplog.text

        api.apply(make_pod("c", "10.0.0.3", VLLM))
        await wait_until(lambda: "c-rank-0" in sink.specs, "events after the resume")
        assert sink.ops[2:] == [
            ("upsert", "b-rank-0"),
            ("delete", "b-rank-0"),
            ("upsert", "c-rank-0"),
        ]
        assert len(api.list_requests()) == 1, "resumes, never a relist"


async def test_watch_is_renewed_after_watch_timeout(api: FakeKubeApi, kubeconfig: str) -> None:
    api.apply(make_pod("a", "10.0.0.1", VLLM))
    plugin = discovery(kubeconfig, watch_timeout=Duration(0.15))
    async with Running(plugin) as sink:
        await synced(api, sink)
        version = api.apply(make_pod("b", "10.0.0.2", VLLM))
        await wait_until(lambda: len(api.watch_requests()) >= 3, "renewed watches")
        assert api.watch_requests()[-1].query["resourceVersion"] == version
        assert len(api.list_requests()) == 1
        assert sink.ops[-1] == ("upsert", "b-rank-1")


async def test_label_selector_is_sent_to_the_api_server(api: FakeKubeApi, kubeconfig: str) -> None:
    api.apply(make_pod("gold", "10.0.0.1", {**VLLM, "tier": "gold"}))
    api.apply(make_pod("bronze", "10.0.0.2", {**VLLM, "tier": "bronze"}))
    api.apply(make_pod("canary", "10.0.0.3", {**VLLM, "tier": "gold", "canary": "1"}))
    api.apply(make_pod("other", "10.0.0.4", {"app": "other", "tier": "gold"}))
    selector = "app=vllm, tier in (silver,gold), !canary"
    async with Running(
        discovery(kubeconfig, target_ports=[8000], label_selector=selector, namespace="default")
    ) as sink:
        await synced(api, sink)
        expected = "app=vllm,tier in (gold,silver),!canary"
        assert api.list_requests()[0].query["labelSelector"] == expected
        assert api.watch_requests()[0].query["labelSelector"] == expected
        assert sorted(sink.specs) == ["gold-rank-0"]

        # Relabelled out of the selector: the API server sends DELETED; back in: ADDED.
        api.apply(make_pod("gold", "10.0.0.1", {**VLLM, "tier": "gold", "canary": "1"}))
        await wait_until(lambda: not sink.specs, "the relabelled-out pod to go")
        api.apply(make_pod("bronze", "10.0.0.2", {**VLLM, "tier": "silver"}))
        await wait_until(lambda: sorted(sink.specs) == ["bronze-rank-0"], "the relabelled-in pod")


async def test_failed_lists_are_retried_and_logged_once(
    api: FakeKubeApi, kubeconfig: str, caplog: pytest.LogCaptureFixture
) -> None:
    api.apply(make_pod("a", "10.0.0.1", VLLM))
    api.fail_lists = 3
    with caplog.at_level(logging.INFO, logger="plugins.discovery.kubernetes"):
        async with Running(discovery(kubeconfig)) as sink:
            await synced(api, sink)
            assert len(api.list_requests()) == 4
            assert sink.ops == [("replace", ["a-rank-0", "a-rank-1"]), ("synced", None)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "the same failure is logged once, not per attempt"
    assert "HTTP 500" in warnings[0].getMessage()
    assert "works again" in caplog.text


async def test_an_event_that_does_not_decode_causes_a_relist_not_a_crash(
    api: FakeKubeApi, kubeconfig: str
) -> None:
    api.apply(make_pod("a", "10.0.0.1", VLLM))
    async with Running(discovery(kubeconfig, target_ports=[8000])) as sink:
        await synced(api, sink)
        api.push_raw(b'{"type":"MODIFIED","object":{"metadata":{"name":"a","labels":["x"]}}}')
        api.apply(make_pod("b", "10.0.0.2", VLLM))  # after the bad line: seen by the relist
        await wait_until(lambda: len(api.list_requests()) == 2, "a relist")
        await wait_until(lambda: sorted(sink.specs) == ["a-rank-0", "b-rank-0"], "both pods")
        await watching(api, 2)
        api.push_raw(b"this is not json")
        await wait_until(lambda: len(api.list_requests()) == 3, "another relist")
        await watching(api, 3)
        api.delete("a")
        await wait_until(lambda: sorted(sink.specs) == ["b-rank-0"], "events after it")


async def test_missing_kubeconfig_is_retried_without_crashing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        async with Running(discovery(str(tmp_path / "absent.yaml"))) as sink:
            await wait_until(lambda: "cannot configure" in caplog.text, "the error log")
            await asyncio.sleep(0.2)
            assert not sink.ops
    assert caplog.text.count("cannot configure the Kubernetes client") == 1


def test_pod_endpoints_ranks_and_active_ports_annotation() -> None:
    def pod(**kwargs: Any) -> Pod:
        return Pod.from_dict(make_pod("p", "fd00::7", VLLM, **kwargs))

    single = pod_endpoints(pod(), [8000], "default")
    assert list(single) == ["p-rank-0"]  # one port: still `-rank-0`, as upstream
    assert single["p-rank-0"].host_port == "[fd00::7]:8000"

    narrowed = pod(annotations={"llm-d.ai/active-ports": "8002, 9999,x"})
    assert {n: s.port for n, s in pod_endpoints(narrowed, [8000, 8001, 8002], "d").items()} == {
        "p-rank-2": 8002  # ranks keep their index; unknown and malformed entries are ignored
    }
    legacy = pod(annotations={"inference.networking.k8s.io/active-ports": "8001"})
    assert list(pod_endpoints(legacy, [8000, 8001], "d")) == ["p-rank-1"]
    assert pod_endpoints(pod(ready=False), [8000], "d") == {}
    assert pod_endpoints(pod(deleting=True), [8000], "d") == {}


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets() -> None:
    high = Backoff(0.1, 0.5, rng=lambda: 1.0)
    assert [round(high.next(), 3) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    high.reset()
    assert high.next() == pytest.approx(0.1)
    low = Backoff(0.1, 0.5, rng=lambda: 0.0)
    assert [round(low.next(), 3) for _ in range(3)] == [0.05, 0.1, 0.2]


def test_parameters_decode_from_camel_case_yaml() -> None:
    params = decode(
        KubernetesDiscoveryParameters,
        {
            "namespace": "llm",
            "labelSelector": "app=vllm",
            "targetPorts": [8000, 8001],
            "kubeconfig": "~/.kube/config",
            "backoffInitial": "100ms",
            "backoffMax": "5s",
            "watchTimeout": "1m",
            "requestTimeout": "2s",
        },
    )
    assert params == KubernetesDiscoveryParameters(
        [8000, 8001], "llm", "app=vllm", "~/.kube/config", 0.1, 5.0, 60.0, 2.0
    )
    KubernetesPodDiscovery("k", params)  # valid, and no I/O happens here
    # Required unless an inferencePool gives them: checked when the plugin is built.
    with pytest.raises(ParameterError, match="targetPorts: must list at least one port"):
        KubernetesPodDiscovery("k", decode(KubernetesDiscoveryParameters, {"namespace": "x"}))


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"target_ports": []}, "targetPorts", "at least one"),
        ({"target_ports": [8000, 0]}, "targetPorts[1]", "1..65535"),
        ({"target_ports": [8000, 65536]}, "targetPorts[1]", "1..65535"),
        ({"target_ports": [8000, 8000]}, "targetPorts[1]", "duplicate port 8000"),
        ({"namespace": ""}, "namespace", "not a namespace name"),
        ({"namespace": "Bad_NS"}, "namespace", "not a namespace name"),
        ({"label_selector": "app in vllm"}, "labelSelector", "expected '('"),
        ({"label_selector": "a!=x,a!=y"}, "labelSelector", "key 'a' appears twice"),
        ({"kubeconfig": ""}, "kubeconfig", "must not be empty"),
        ({"backoff_initial": Duration(0)}, "backoffInitial", "greater than zero"),
        ({"backoff_max": Duration(0.01)}, "backoffMax", "not be less than backoffInitial"),
        ({"watch_timeout": Duration(0)}, "watchTimeout", "greater than zero"),
        ({"request_timeout": Duration(0)}, "requestTimeout", "greater than zero"),
    ],
)
def test_invalid_parameters_name_the_field(
    overrides: dict[str, Any], field: str, fragment: str
) -> None:
    overrides.setdefault("kubeconfig", "/k")
    with pytest.raises(ParameterError) as info:
        discovery(**overrides)
    assert info.value.field == field
    assert fragment in info.value.message
