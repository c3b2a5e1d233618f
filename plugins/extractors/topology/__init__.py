"""`topology-extractor`: an endpoint's hostname / rack / zone / region as one attribute."""

from plugins.extractors.topology.extractor import TOPOLOGY, TopologyExtractor

__all__ = ["TOPOLOGY", "TopologyExtractor"]
