"""`load-json-extractor`: a load report into `metrics.custom`, and optionally the typed queue."""

from __future__ import annotations

from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import Parameters
from datalayer.plugin import Extractor
from datalayer_loadjson.source import LoadReport


class LoadJsonExtractorParameters(Parameters):
    #: Report members to copy into `metrics.custom`; empty copies every number.
    keys: list[str] = []
    #: Prefix of the custom keys, so they cannot collide with other extractors' keys.
    prefix: str = "load."
    #: A member that also sets the typed `waiting_queue_size` (schedulers' queue scorer).
    queue_key: str | None = None


class LoadJsonExtractor(Extractor):
    type_name = "load-json-extractor"
    description = "example third-party extractor: a JSON load report into metrics.custom"
    Parameters = LoadJsonExtractorParameters
    input_type = LoadReport

    def __init__(self, name: str, params: LoadJsonExtractorParameters) -> None:
        super().__init__(name, params)
        self._params = params

    def extract(self, payload: LoadReport, endpoint: EndpointSpec, out: EndpointUpdate) -> None:
        p = self._params
        for key in p.keys or list(payload):
            if key in payload:
                out.set_custom(p.prefix + key, payload[key])
            else:
                out.error(f"custom[{p.prefix}{key}]", f"no number {key!r} in the load report")
        if p.queue_key is not None:
            if p.queue_key in payload:
                out.set_metric("waiting_queue_size", int(payload[p.queue_key]))
            else:
                out.error("waiting_queue_size", f"no number {p.queue_key!r} in the load report")
