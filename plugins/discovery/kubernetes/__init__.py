"""`kubernetes-pod-discovery`: ready pods of a namespace, listed then watched via the API server."""

from plugins.discovery.kubernetes.discovery import (
    KubernetesDiscoveryParameters,
    KubernetesPodDiscovery,
)

#: The RBAC verbs on `pods` this plugin's API calls need (reflector.py: list, then watch);
#: deploy/kubernetes/role.yaml is checked against it.
REQUIRED_VERBS = ("list", "watch")

__all__ = ["REQUIRED_VERBS", "KubernetesDiscoveryParameters", "KubernetesPodDiscovery"]
