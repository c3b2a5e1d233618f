"""`dcgm-data-source`: NVIDIA DCGM exporter pages, from a sidecar or the node's DaemonSet."""

from plugins.sources.dcgm.source import DcgmDataSource, DcgmSourceParameters

__all__ = ["DcgmDataSource", "DcgmSourceParameters"]
