"""The served models as the attribute `/v1/models`: a list of `{id, parent}`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.plugin import Extractor
from plugins.sources.models.source import ModelsList

ATTRIBUTE_KEY = "/v1/models"


@dataclass
class ModelsExtractorParameters:
    pass


class ModelsDataExtractor(Extractor):
    type_name = "models-data-extractor"
    description = "the /v1/models list as attribute `/v1/models`: [{id, parent}]"
    Parameters = ModelsExtractorParameters
    input_type = ModelsList

    def produced_attributes(self) -> frozenset[str]:
        return frozenset({ATTRIBUTE_KEY})

    def extract(self, payload: ModelsList, endpoint: EndpointSpec, out: EndpointUpdate) -> None:
        models: list[Any] = []
        for entry in payload:
            model_id = entry.get("id")
            if not isinstance(model_id, str) or not model_id:
                out.error(ATTRIBUTE_KEY, f"an entry has no string id: {entry!r:.80}")
                continue
            parent = entry.get("parent")
            models.append({"id": model_id, "parent": parent if isinstance(parent, str) else None})
        out.set_attribute(ATTRIBUTE_KEY, models)
