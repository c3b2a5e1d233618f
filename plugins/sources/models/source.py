"""GET `/v1/models` (the OpenAI list) on its own, slower tick: served models change rarely."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from datalayer.model import EndpointSpec
from datalayer.params import Duration, FilePath
from datalayer.plugin import ParameterError, PollingDataSource
from plugins.shared.http.aio import PollError, fetch_body, new_session
from plugins.shared.http.tls import ClientTls, check_client_tls


class ModelsList(list[dict[str, Any]]):
    """The `data` entries of an OpenAI model list; a class so wiring can be type-checked."""

    __slots__ = ()


@dataclass
class ModelsSourceParameters:
    scheme: Literal["http", "https"] = "http"
    path: str = "/v1/models"
    port: int | None = None
    timeout: Duration | None = None
    max_body_bytes: int = 1024 * 1024
    insecure_skip_verify: bool = False
    #: HTTPS: a PEM bundle of CAs to trust, and a client certificate and key (mTLS).
    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None


class ModelsDataSource(PollingDataSource):
    type_name = "models-data-source"
    description = "HTTP GET of the OpenAI /v1/models list (default every 5s)"
    Parameters = ModelsSourceParameters
    output_type = ModelsList
    default_interval = 5.0

    def __init__(self, name: str, params: ModelsSourceParameters) -> None:
        super().__init__(name, params)
        if not params.path.startswith("/"):
            raise ParameterError("path", f"must start with '/', got {params.path!r}")
        if params.port is not None and not 0 < params.port < 65536:
            raise ParameterError("port", f"must be 1..65535, got {params.port}")
        check_client_tls(
            ClientTls(
                params.ca_file, params.cert_file, params.key_file, params.insecure_skip_verify
            )
        )
        self._params = params
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        p = self._params
        self._session = new_session(
            "application/json",
            p.timeout,
            ClientTls(p.ca_file, p.cert_file, p.key_file, p.insecure_skip_verify),
        )

    async def poll(self, endpoint: EndpointSpec) -> ModelsList:
        if self._session is None:
            raise RuntimeError("source not started")
        p = self._params
        host = f"[{endpoint.address}]" if ":" in endpoint.address else endpoint.address
        url = f"{p.scheme}://{host}:{p.port or endpoint.port}{p.path}"
        body = await fetch_body(self._session, url, p.max_body_bytes)
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise PollError(f"not JSON: {exc}") from None
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, list):
            raise PollError("not an OpenAI model list: no `data` list")
        return ModelsList(entry for entry in data if isinstance(entry, dict))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
