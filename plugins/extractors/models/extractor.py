"""The served models as the attribute `/v1/models`: a list of `{id, parent, object, created,
owned_by}` (upstream's ModelInfo fields; a field the server did not send is null)."""

from __future__ import annotations

from typing import Any

from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import Parameters
from datalayer.plugin import Extractor
from plugins.sources.models.source import ModelsList

ATTRIBUTE_KEY = "/v1/models"


class ModelsExtractorParameters(Parameters):
    """No parameters."""


class ModelsDataExtractor(Extractor):
    type_name = "models-data-extractor"
    description = "the /v1/models list as attribute `/v1/models`: [{id, parent, object, ...}]"
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
            created = entry.get("created")
            models.append(
                {
                    "id": model_id,
                    "parent": parent if isinstance(parent, str) else None,
                    "object": _text(entry.get("object")),
                    "created": created if _is_int(created) else None,
                    "owned_by": _text(entry.get("owned_by")),
                }
            )
        out.set_attribute(ATTRIBUTE_KEY, models)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
