"""deploy/kubernetes: every manifest parses, and names, labels, ports, RBAC verbs and the
ConfigMap's config agree with each other and with the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from datalayer.config import load_config_text
from datalayer.registry import default_registry
from plugins.discovery.kubernetes import REQUIRED_VERBS
from server.cli import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    """kind -> the one object of that kind (the kustomization lists the files)."""
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    files = kustomization["resources"]
    assert sorted(files) == sorted(
        p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml"
    )
    objects: dict[str, dict[str, Any]] = {}
    for name in files:
        for doc in yaml.safe_load_all((DEPLOY / name).read_text()):
            assert doc["apiVersion"]
            key = doc["kind"]
            if doc["kind"] == "Service" and doc["spec"].get("clusterIP") == "None":
                key = "Service/headless"  # the replica group's peers
            assert key not in objects, f"two {key} objects"
            assert doc["metadata"]["namespace"] == kustomization["namespace"]
            objects[key] = doc
    return objects


def container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def test_service_selects_the_deployment_pods_on_its_named_ports(
    manifests: dict[str, dict[str, Any]],
) -> None:
    deployment, service = manifests["Deployment"], manifests["Service"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container_ports = {p["name"]: p["containerPort"] for p in container(manifests)["ports"]}
    assert set(container_ports) == {"grpc", "metrics"}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in container_ports
        assert port["port"] == container_ports[port["targetPort"]]


def test_container_args_are_a_valid_serve_command_matching_the_ports(
    manifests: dict[str, dict[str, Any]],
) -> None:
    spec = container(manifests)
    args = build_parser().parse_args(spec["args"])
    assert args.command == "serve"
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert (args.grpc_port, args.metrics_port) == (ports["grpc"], ports["metrics"])
    assert spec["readinessProbe"]["grpc"]["port"] == args.grpc_port
    (mount,) = spec["volumeMounts"]
    assert Path(args.config).parent == Path(mount["mountPath"])
    (volume,) = manifests["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert volume["name"] == mount["name"]
    assert volume["configMap"]["name"] == manifests["ConfigMap"]["metadata"]["name"]
    assert Path(args.config).name in manifests["ConfigMap"]["data"]


def test_configmap_config_loads_and_discovers_pods_in_the_role_namespace(
    manifests: dict[str, dict[str, Any]],
) -> None:
    text = next(iter(manifests["ConfigMap"]["data"].values()))
    config = load_config_text(text, default_registry(), file="configmap.yaml")
    assert config.discovery is not None
    assert config.discovery.type_name == "kubernetes-pod-discovery"
    assert config.discovery.params.namespace == manifests["Role"]["metadata"]["namespace"]


def test_rbac_grants_what_the_discovery_code_uses_to_the_deployment_account(
    manifests: dict[str, dict[str, Any]],
) -> None:
    account = manifests["ServiceAccount"]["metadata"]["name"]
    assert manifests["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"] == account
    binding = manifests["RoleBinding"]
    assert {"kind": "ServiceAccount", "name": account, "namespace": "llm-d"} in binding["subjects"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": manifests["Role"]["metadata"]["name"],
    }
    (rule,) = manifests["Role"]["rules"]
    assert rule["apiGroups"] == [""]
    assert rule["resources"] == ["pods"]
    assert set(REQUIRED_VERBS) <= set(rule["verbs"])
    assert set(rule["verbs"]) <= {"get", "list", "watch"}  # read-only


def test_replicated_form_finds_its_peers_through_the_headless_service(
    manifests: dict[str, dict[str, Any]],
) -> None:
    deployment, peers = manifests["Deployment"], manifests["Service/headless"]
    replicas = deployment["spec"]["replicas"]
    assert replicas >= 2
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert peers["spec"]["selector"].items() <= pod_labels.items()
    assert peers["spec"]["publishNotReadyAddresses"] is True
    spec = container(manifests)
    args = build_parser().parse_args(spec["args"])
    (peer_port,) = peers["spec"]["ports"]
    assert peer_port["port"] == args.grpc_port
    # The config's peersDNS is this Service's name in this namespace, on the gRPC port.
    text = next(iter(manifests["ConfigMap"]["data"].values()))
    cluster = load_config_text(text, default_registry(), file="configmap.yaml").cluster
    assert cluster is not None
    assert cluster.mode == "sharded"
    assert cluster.peers_dns is not None
    host, _, port = cluster.peers_dns.rpartition(":")
    namespace = peers["metadata"]["namespace"]
    assert host.split(".")[:3] == [peers["metadata"]["name"], namespace, "svc"]
    assert int(port) == args.grpc_port
    # `self` is left to $POD_IP (the address the headless Service resolves to).
    assert cluster.self_address is None
    env = {e["name"]: e for e in spec["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    # Rolling updates add a replica before removing one; disruptions take one at a time.
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0
    budget = manifests["PodDisruptionBudget"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert replicas - budget["spec"]["maxUnavailable"] >= 2
