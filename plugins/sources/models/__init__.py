"""`models-data-source`: the served models from an endpoint's OpenAI `/v1/models`."""

from plugins.sources.models.source import ModelsDataSource, ModelsList

__all__ = ["ModelsDataSource", "ModelsList"]
