"""`dcgm-extractor`: a pod's GPU utilisation (0..1) from a DCGM exporter page."""

from plugins.extractors.dcgm.extractor import GPU_UTILIZATION, DcgmExtractor

__all__ = ["GPU_UTILIZATION", "DcgmExtractor"]
