"""The list-then-watch loop over pods (client-go's Reflector, reduced to what discovery needs).

One loop, one state machine:

1. **list** the pods (namespace + label selector) and report the full set with
   `sink.replace_all`; the list's `resourceVersion` is where the watch starts. After the
   first successful list, `sink.mark_synced()`.
2. **watch** from that resourceVersion and apply each ADDED / MODIFIED / DELETED event to
   the sink in the order received, remembering the resourceVersion of every event (BOOKMARK
   events only move it).
3. On **410 Gone** (an HTTP 410, or an ERROR event whose Status has code 410) the
   resourceVersion is too old to resume from: go back to 1. Changes missed meanwhile,
   deletions included, are picked up by `replace_all`.
4. On a connection or HTTP error, wait (jittered exponential backoff) and **resume** the
   watch from the last resourceVersion applied; if the server no longer has it, 3 follows.
   Anything else (an object that does not decode, a bug) also waits, then relists, so a bad
   event can never wedge the loop on the same resourceVersion.

How lightkube shapes this: its `watch()` generator remembers the resourceVersion of each
event and, when the server ends a stream cleanly (a server-side timeout), re-requests from
it by itself; with the default `on_error` it raises every error, which is what lets this loop
decide between resume and relist. It reports an HTTP 410 as a plain `httpx2.HTTPStatusError`
(only in-stream ERROR events become `lightkube.ApiError`), so both are checked. Its watch
requests have no read timeout; a watch session here is therefore closed after
`watch_timeout` and resumed, which bounds how long a silently dead connection can go unseen.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, Protocol

import httpx2
from lightkube import ApiError, AsyncClient
from lightkube.core.client import LabelSelector
from lightkube.resources.core_v1 import Pod

from datalayer.model import EndpointSpec
from datalayer.plugin import DiscoverySink

log = logging.getLogger(__name__)


class Backoff:
    """Jittered exponential delays: initial, 2x, 4x ... capped at `maximum`, each times 0.5..1.

    The jitter keeps many replicas that lost the API server together from coming back in
    lockstep.
    """

    def __init__(
        self, initial: float, maximum: float, rng: Callable[[], float] = random.random
    ) -> None:
        self._initial = initial
        self._maximum = maximum
        self._rng = rng
        self._next = initial

    def next(self) -> float:
        """The delay before the next attempt; each call doubles the following one."""
        delay = self._next
        self._next = min(self._maximum, self._next * 2)
        return delay * (0.5 + self._rng() / 2)

    def reset(self) -> None:
        """Back to the initial delay, after an attempt that made progress."""
        self._next = self._initial


def is_gone(exc: BaseException) -> bool:
    """True when `exc` says the resourceVersion is too old (410 Gone), in either form."""
    if isinstance(exc, ApiError):  # an ERROR event in the stream (or a decoded error body)
        return exc.status is not None and exc.status.code == 410
    if isinstance(exc, httpx2.HTTPStatusError):  # the watch request itself answered 410
        return exc.response.status_code == 410
    return False


def describe(exc: BaseException) -> str:
    """A one-line reason for logs, without a traceback for the expected failures."""
    if isinstance(exc, ApiError) and exc.status is not None:
        status = exc.status
        return f"{status.code} {status.reason or 'error'}: {status.message or ''}".rstrip(": ")
    if isinstance(exc, httpx2.HTTPStatusError):
        return f"HTTP {exc.response.status_code} {exc.response.reason_phrase}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Tracker(Protocol):
    """Turns a list (`resync`) and each watch event (`apply`) into calls on the sink."""

    async def resync(self, sink: DiscoverySink, items: Any) -> None: ...

    async def apply(self, sink: DiscoverySink, event_type: str, item: Any) -> None: ...

    @property
    def endpoint_count(self) -> int: ...


class PodReflector:
    """Keeps `sink` equal to the ready pods matching a namespace and label selector."""

    def __init__(
        self,
        client: AsyncClient,
        sink: DiscoverySink,
        tracker: Tracker,
        *,
        namespace: str,
        labels: LabelSelector | None,
        backoff: Backoff,
        watch_timeout: float,
        resource: Any = Pod,
    ) -> None:
        #: What is listed and watched: Pod, or any lightkube (generic) namespaced resource;
        #: the tracker turns its objects into sink calls.
        self._resource = resource
        self._client = client
        self._sink = sink
        self._tracker = tracker
        self._namespace = namespace
        self._labels = labels
        self._backoff = backoff
        self._watch_timeout = watch_timeout
        #: Where the next watch resumes; None means the next step is a list.
        self.resource_version: str | None = None
        self._synced = False
        self._failure: str | None = None

    async def run(self) -> None:
        """List, then watch, for ever; returns only by cancellation."""
        while True:
            try:
                if self.resource_version is None:
                    await self._relist()
                await self._watch()
            except Exception as exc:  # every failure is retried; none may end the loop
                delay = self._backoff.next()
                self._on_failure(exc, delay)
                await asyncio.sleep(delay)

    async def _relist(self) -> None:
        listing = self._client.list(self._resource, namespace=self._namespace, labels=self._labels)
        pods = [pod async for pod in listing]
        version = listing.resourceVersion
        await self._tracker.resync(self._sink, pods)
        self.resource_version = version
        log.info(
            "listed %d pods in namespace %s at resourceVersion %s: %d endpoints",
            len(pods),
            self._namespace,
            version,
            self._tracker.endpoint_count,
        )
        if not self._synced:
            self._sink.mark_synced()
            self._synced = True
        self._recovered()

    async def _watch(self) -> None:
        """One watch session, until `watch_timeout` or an error.

        A session that delivers an event (or lasts its full time) resets the backoff: only
        failures in a row make the delays grow.
        """
        assert self.resource_version is not None
        log.debug("watching pods in %s from %s", self._namespace, self.resource_version)
        stream = self._client.watch(
            self._resource,
            namespace=self._namespace,
            labels=self._labels,
            resource_version=self.resource_version,
        )
        events = aiter(stream)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._watch_timeout
        try:
            while True:
                # Only the wait for the next event is bounded: a sink call is never cut short.
                timeout = asyncio.timeout(max(0.0, deadline - loop.time()))
                try:
                    async with timeout:
                        event_type, pod = await anext(events)
                except TimeoutError:
                    if not timeout.expired():
                        raise
                    log.debug("renewing the pod watch at %s", self.resource_version)
                    self._backoff.reset()
                    return
                except StopAsyncIteration:
                    # lightkube's watch never ends by itself; if it did, retry via the backoff.
                    raise RuntimeError("the watch stream ended") from None
                self._backoff.reset()
                self._recovered()
                await self._apply(event_type, pod)
        finally:
            if isinstance(events, AsyncGenerator):
                await events.aclose()

    async def _apply(self, event_type: str, pod: Any) -> None:
        if event_type in ("ADDED", "MODIFIED", "DELETED"):
            await self._tracker.apply(self._sink, event_type, pod)
        elif event_type != "BOOKMARK":
            log.debug("ignoring a %s watch event", event_type)
        version = pod.metadata.resourceVersion if pod.metadata is not None else None
        if version:
            self.resource_version = version

    def _on_failure(self, exc: Exception, delay: float) -> None:
        if is_gone(exc):
            # Routine (history compacted while the watch was away): not a failure state.
            log.info(
                "pod watch in %s: resourceVersion %s is gone (410); relisting",
                self._namespace,
                self.resource_version,
            )
            self.resource_version = None
            return
        expected = isinstance(exc, httpx2.HTTPError)
        if not expected:
            # Bad data or a bug: resuming could replay the same event, so start from a list.
            self.resource_version = None
        reason = describe(exc)
        if reason == self._failure:
            log.debug("pod list/watch still failing: %s", reason)
            return
        self._failure = reason
        log.warning(
            "pod list/watch in namespace %s failed: %s; %s in %.2fs",
            self._namespace,
            reason,
            "resuming" if self.resource_version is not None else "relisting",
            delay,
            exc_info=not expected,
        )

    def _recovered(self) -> None:
        if self._failure is not None:
            log.info("pod list/watch in namespace %s works again", self._namespace)
            self._failure = None


class SyncOnlySink:
    """A reflector's sink for a watch that reports no endpoints of its own (an InferencePool,
    a notification source's objects): the reflector only calls `mark_synced` on it."""

    def mark_synced(self) -> None:
        pass

    async def upsert(self, spec: EndpointSpec) -> None:  # pragma: no cover - never called
        pass

    async def delete(self, name: str) -> None:  # pragma: no cover - never called
        pass

    async def replace_all(self, specs: Sequence[EndpointSpec]) -> None:  # pragma: no cover
        pass
