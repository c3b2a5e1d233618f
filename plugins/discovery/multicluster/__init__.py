"""`multicluster-file-discovery`: peer clusters, listed in a file, as endpoints."""

from plugins.discovery.multicluster.discovery import MulticlusterFileDiscovery

__all__ = ["MulticlusterFileDiscovery"]
