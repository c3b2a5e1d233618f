"""`models-data-source` + `models-data-extractor`: the served models from `/v1/models`."""

from plugins.models.extractor import ModelsDataExtractor
from plugins.models.source import ModelsDataSource, ModelsList

__all__ = ["ModelsDataExtractor", "ModelsDataSource", "ModelsList"]
