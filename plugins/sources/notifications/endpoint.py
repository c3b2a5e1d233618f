"""`endpoint-notification-source`: endpoint lifecycle events, in order, to its extractors.

The collector tells every event-driven source its endpoints after each change
(`update_endpoints`); this source turns the difference into events: `delete` for an
endpoint that left, then `add-or-update` for one that arrived or whose metadata changed
(a relabel, a new node address). Events are queued in that order and delivered by `run`, so
extractors see them in the order the changes happened, never concurrently.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping, Sequence

from datalayer.model import EndpointSpec, EndpointUpdate
from datalayer.notifications import EndpointEvent, NotificationSource
from datalayer.parameters import Parameters
from datalayer.plugin import Extractor, PayloadSink

log = logging.getLogger(__name__)


class EndpointNotificationParameters(Parameters):
    """No parameters (upstream's has none)."""


class EndpointNotificationSource(NotificationSource):
    type_name = "endpoint-notification-source"
    description = "endpoint add-or-update / delete events, in order, to its extractors"
    Parameters = EndpointNotificationParameters
    output_type = EndpointEvent

    def __init__(self, name: str, params: EndpointNotificationParameters) -> None:
        super().__init__(name, params)
        self._known: dict[str, EndpointSpec] = {}
        self._pending: deque[EndpointEvent] = deque()
        self._wake = asyncio.Event()
        self._extractors: list[Extractor] = []

    def start(self, extractors: Sequence[Extractor]) -> None:
        self._extractors = list(extractors)

    def update_endpoints(self, endpoints: Mapping[str, EndpointSpec]) -> None:
        for name in sorted(self._known.keys() - endpoints.keys()):
            self._pending.append(EndpointEvent("delete", self._known.pop(name)))
        for name in sorted(endpoints):
            spec = endpoints[name]
            if self._known.get(name) != spec:
                self._known[name] = spec
                self._pending.append(EndpointEvent("add-or-update", spec))
        if self._pending:
            self._wake.set()

    async def run(self, sink: PayloadSink) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                self.dispatch(self._pending.popleft(), sink)

    def dispatch(self, event: EndpointEvent, sink: PayloadSink) -> None:
        """One event to every extractor: through the sink (so what they record lands on the
        endpoint), or for a delete directly, with a scratch update (the endpoint is gone)."""
        spec = event.endpoint
        if event.type == "add-or-update" and sink.deliver(spec.name, event):
            return
        scratch = EndpointUpdate()
        for extractor in self._extractors:
            try:
                extractor.extract(event, spec, scratch)
            except Exception:  # one extractor's bug must not stop the others' events
                log.exception("extractor %s failed on %s %s", extractor.name, event.type, spec.name)
