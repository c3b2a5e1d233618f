"""The plugin contracts: the only things the core knows about sources, extractors and discovery.

Each contract is a small abstract class; plugins subclass one, declare their
`type_name` and a `Parameters` model (a `datalayer.parameters.Parameters`
struct), and register with the registry. The core builds them from
configuration and never imports a plugin module.

A minimal extractor, for a source whose payload is a `dict`::

    class Params(Parameters):
        key: Annotated[str, Meta(min_length=1)] = "load"

    class LoadExtractor(Extractor):
        type_name = "load-extractor"
        Parameters = Params
        input_type = dict

        def __init__(self, name: str, params: Params) -> None:
            super().__init__(name, params)
            self.key = params.key

        def extract(self, payload: dict, endpoint: EndpointSpec, out: EndpointUpdate) -> None:
            out.set_custom(self.key, float(payload[self.key]))
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.parameters import ParameterError as ParameterError  # where plugins import it
from datalayer.parameters import Parameters
from datalayer.parameters import check as check_parameters


class Plugin(abc.ABC):
    """Base of every plugin: a named instance built from its decoded parameters."""

    #: The name used in YAML (`plugins[].type`).
    type_name: ClassVar[str]
    #: The model of `plugins[].parameters` (a `Parameters` struct: typed fields, bounds as
    #: constraints); decoded strictly by the config loader, shown by `datalayer plugins`.
    Parameters: ClassVar[type[Parameters]]
    #: One line for `datalayer plugins`.
    description: ClassVar[str] = ""

    def __init__(self, name: str, params: Any) -> None:
        check_parameters(params)  # a model built in code gets the bounds a decoded one had
        self.name = name
        self.params = params

    async def close(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Release connections or files; called once at shutdown."""


class Extractor(Plugin):
    """Turns a source's payload into endpoint metrics and attributes."""

    #: The payload type this extractor accepts; the source's `output_type` must be a subclass.
    input_type: ClassVar[type]

    def required_names(self) -> frozenset[str]:
        """What the source must fetch for this extractor (e.g. metric names), known at start-up."""
        return frozenset()

    def produced_attributes(self) -> frozenset[str]:
        """The attribute keys `extract` may set, known at start-up. A Watch may name these
        (and keys some endpoint holds) in `attributes`; any other key is refused as a typo
        rather than accepted as a stream that never sends it. Default: none."""
        return frozenset()

    @abc.abstractmethod
    def extract(self, payload: Any, endpoint: EndpointSpec, out: EndpointUpdate) -> None:
        """Record values (or per-field errors) read from `payload` in `out`; never raise."""


class DataSource(Plugin):
    """What every source shares: a payload type, and the extractors that consume it."""

    #: The payload type this source hands to its extractors.
    output_type: ClassVar[type]
    #: The tick when the configuration sets none (e.g. `/v1/models` changes rarely).
    default_interval: ClassVar[float | None] = None

    def check_extractor(self, extractor: Extractor) -> str | None:
        """Why `extractor` cannot consume this source's payloads, or None when it can."""
        if not issubclass(self.output_type, extractor.input_type):
            return (
                f"extractor {extractor.name!r} ({extractor.type_name}) takes "
                f"{extractor.input_type.__name__} but source {self.name!r} "
                f"({self.type_name}) produces {self.output_type.__name__}"
            )
        return None

    def start(self, extractors: Sequence[Extractor]) -> None:
        """Called once by the runtime, inside the running event loop, with the extractors
        wired under this source (checked by `check_extractor`): the one place a source
        learns what they need (e.g. the metric names to scan for) and opens its clients."""


class PollingDataSource(DataSource):
    """Fetches one payload per endpoint per tick; the collector owns the schedule."""

    @abc.abstractmethod
    async def poll(self, endpoint: EndpointSpec) -> Any:
        """Fetch one payload from `endpoint`; raise on failure (the collector records why)."""

    def start_poll(self, endpoint: EndpointSpec) -> asyncio.Future[Any]:
        """Begin one poll; the future resolves to the payload or fails with the reason.

        The default runs `poll` as a task. A source on a callback-driven transport
        overrides it to skip the task (the collector starts thousands of polls a
        second). Cancelling the future must abort the poll: it is how the collector's
        timeout ends a hung request.
        """
        return asyncio.ensure_future(self.poll(endpoint))


class PayloadSink(Protocol):
    """Where an event-driven source delivers payloads; extraction and commit happen there."""

    def deliver(self, endpoint_name: str, payload: Any) -> bool:
        """Extract and commit at once; False when the endpoint is not one of this source's."""
        ...


class PushDataSource(DataSource):
    """Drives itself (the data-layer proposal's event-driven source): payloads arrive when the
    endpoint or a sidecar sends them, not on a tick."""

    @abc.abstractmethod
    async def run(self, sink: PayloadSink) -> None:
        """Receive payloads and `sink.deliver` them until cancelled (Start/Stop)."""

    def update_endpoints(self, endpoints: Mapping[str, EndpointSpec]) -> None:
        """The endpoints this source serves now, by name; called after every change."""


class DiscoverySink(Protocol):
    """Where discovery reports endpoints; calls are applied in the order they are awaited."""

    async def upsert(self, spec: EndpointSpec) -> None: ...

    async def delete(self, name: str) -> None: ...

    async def replace_all(self, specs: Sequence[EndpointSpec]) -> None: ...

    def mark_synced(self) -> None: ...


class Discovery(Plugin):
    """Finds endpoints and keeps the store's set of them current."""

    @abc.abstractmethod
    async def run(self, sink: DiscoverySink) -> None:
        """Report endpoints to `sink` until cancelled; `sink.mark_synced()` after the first set."""
