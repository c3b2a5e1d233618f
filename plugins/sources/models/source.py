"""GET `/v1/models` (the OpenAI list) on its own, slower tick: served models change rarely."""

from __future__ import annotations

import json
from typing import Any

from datalayer.parameters import PositiveInt, UrlPath
from plugins.shared.http.aio import PollError
from plugins.shared.http.source import HttpDataSource
from plugins.shared.http.transport import HttpParameters


class ModelsList(list[dict[str, Any]]):
    """The `data` entries of an OpenAI model list; a class so wiring can be type-checked."""

    __slots__ = ()


class ModelsSourceParameters(HttpParameters):
    path: UrlPath = "/v1/models"
    max_body_bytes: PositiveInt = 1024 * 1024


class ModelsDataSource(HttpDataSource):
    type_name = "models-data-source"
    description = "HTTP GET of the OpenAI /v1/models list (default every 5s)"
    Parameters = ModelsSourceParameters
    output_type = ModelsList
    default_interval = 5.0
    accept = "application/json"

    def decode(self, body: bytes) -> ModelsList:
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise PollError(f"not JSON: {exc}") from None
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, list):
            raise PollError("not an OpenAI model list: no `data` list")
        return ModelsList(entry for entry in data if isinstance(entry, dict))
