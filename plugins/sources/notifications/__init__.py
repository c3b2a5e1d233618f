"""`endpoint-notification-source` and `k8s-notification-source`: events, not readings."""

from plugins.sources.notifications.endpoint import EndpointNotificationSource
from plugins.sources.notifications.k8s import K8sNotificationSource

__all__ = ["EndpointNotificationSource", "K8sNotificationSource"]
