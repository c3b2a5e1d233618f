"""`models-data-extractor`: the `/v1/models` list into the endpoint's attributes."""

from plugins.extractors.models.extractor import ModelsDataExtractor

__all__ = ["ModelsDataExtractor"]
