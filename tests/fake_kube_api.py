"""A small in-process Kubernetes API server for pods, speaking the real list/watch protocol.

No real API server can run on the test machines, so `kubernetes-pod-discovery` is tested
against this one, through the real client (lightkube over HTTP on a loopback socket). It
implements the parts of the protocol a reflector depends on, as the API server does them:

- `GET /api/v1/namespaces/{ns}/pods` returns a `PodList` whose `metadata.resourceVersion`
  is the version the list reflects; `labelSelector` is honoured (full Kubernetes syntax).
- `...pods?watch=true&resourceVersion=N` streams newline-delimited JSON events
  (`{"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR", "object": {...}}`) over a
  chunked response that stays open: first every change after N, then live changes. Without
  a resourceVersion it starts with synthetic ADDED events for the current pods.
- A change that moves a pod into or out of the label selector reaches a watcher as ADDED or
  DELETED, as the API server's watch filter does.
- A resourceVersion older than the compaction point is answered `410 Gone`: as HTTP 410 with
  a `Status` body, or (`gone_as_event`) as a 200 stream holding one ERROR event whose object
  is a `Status` with code 410. Both happen in real clusters.

The test drives it: `apply`/`delete` pods, `compact` history, `expire_watches` (ERROR 410 on
open streams), `end_watches` (clean end of stream), `drop_watches` (connection cut without
the final chunk), `push_raw` (an arbitrary line, for bad input), and reads `requests`.
"""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from datalayer.selector import Selector, SelectorError, parse_selector

Json = dict[str, Any]
_END: Literal["end"] = "end"
_DROP: Literal["drop"] = "drop"
_StreamItem = bytes | Literal["end", "drop"]


def make_pod(
    name: str,
    ip: str | None = "10.0.0.1",
    labels: dict[str, str] | None = None,
    *,
    ready: bool = True,
    phase: str = "Running",
    namespace: str = "default",
    annotations: dict[str, str] | None = None,
    deleting: bool = False,
    host_ip: str | None = None,
) -> Json:
    """A pod object shaped as the API server returns it (only the fields that matter here)."""
    status: Json = {"phase": phase}
    if host_ip is not None:
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
    if ip is not None:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    if phase != "Pending":
        status["conditions"] = [
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": "True" if ready else "False"},
            {"type": "ContainersReady", "status": "True" if ready else "False"},
            {"type": "PodScheduled", "status": "True"},
        ]
    else:
        status["conditions"] = [{"type": "PodScheduled", "status": "False"}]
    metadata: Json = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{namespace}-{name}",
        "labels": dict(labels or {}),
        "creationTimestamp": "2025-01-01T00:00:00Z",
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    if deleting:
        metadata["deletionTimestamp"] = "2025-01-01T00:10:00Z"
        metadata["deletionGracePeriodSeconds"] = 30
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": metadata,
        "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:latest"}]},
        "status": status,
    }


def status_object(code: int, reason: str, message: str) -> Json:
    """A `metav1.Status` failure, as the API server reports errors."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass
class RecordedRequest:
    """One request the fake served: `list` or `watch`, the namespace and the query."""

    kind: Literal["list", "watch"]
    namespace: str
    query: dict[str, str]


@dataclass
class _Change:
    rv: int
    old: Json | None
    new: Json | None  # None: the pod was deleted (then `old` is its last state)


@dataclass(eq=False)
class _Watch:
    namespace: str
    selector: Selector
    queue: asyncio.Queue[_StreamItem] = field(default_factory=asyncio.Queue)

    def offer(self, change: _Change) -> None:
        """Queue the event this watcher sees for `change`, applying the selector as the API does."""
        event = _event_for(change, self.namespace, self.selector)
        if event is not None:
            self.queue.put_nowait(_line(event))


def _labels(pod: Json | None) -> dict[str, str]:
    return dict((pod or {}).get("metadata", {}).get("labels") or {})


def _event_for(change: _Change, namespace: str, selector: Selector) -> Json | None:
    pod = change.new if change.new is not None else change.old
    assert pod is not None
    if pod["metadata"]["namespace"] != namespace:
        return None
    old_match = change.old is not None and selector.matches(_labels(change.old))
    new_match = change.new is not None and selector.matches(_labels(change.new))
    if change.new is None:
        return {"type": "DELETED", "object": change.old} if old_match else None
    if old_match and new_match:
        return {"type": "MODIFIED", "object": change.new}
    if new_match:
        return {"type": "ADDED", "object": change.new}
    if old_match:  # relabelled out of the selector: the watcher sees it go away
        return {"type": "DELETED", "object": change.new}
    return None


def _line(event: Json) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


class FakeKubeApi:
    """An aiohttp server on 127.0.0.1 (port 0) holding pods and serving list and watch."""

    def __init__(self) -> None:
        self._pods: dict[tuple[str, str], Json] = {}
        self._rv = 1000
        self._history: list[_Change] = []
        self._watches: set[_Watch] = set()
        self._runner: web.AppRunner | None = None
        #: Watches starting from a resourceVersion below this get 410 Gone.
        self.compacted_rv = 0
        #: Report 410 as a 200 stream with one ERROR event instead of an HTTP 410.
        self.gone_as_event = False
        #: The next this many list requests fail with 500 (to test retries).
        self.fail_lists = 0
        self.requests: list[RecordedRequest] = []
        #: Watch streams that reached the live phase (after their 200 and any replay).
        self.watches_opened = 0
        self.url = ""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{namespace}/pods", self._handle)
        # handler_cancellation: a watch whose client went away stops counting as open.
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        self.end_watches()
        if self._runner is not None:
            await self._runner.cleanup()

    def kubeconfig(self) -> str:
        """A kubeconfig that points a client at this server, without authentication."""
        return (
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
            f"clusters:\n- name: fake\n  cluster: {{server: '{self.url}'}}\n"
            "users:\n- name: fake\n  user: {}\n"
            "contexts:\n- name: fake\n  context: {cluster: fake, user: fake, namespace: default}\n"
        )

    # -- state the test drives -------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    @property
    def open_watches(self) -> int:
        return len(self._watches)

    def watch_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == "watch"]

    def list_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == "list"]

    def apply(self, pod: Json) -> str:
        """Create or replace a pod (ADDED or MODIFIED); returns its new resourceVersion."""
        new = copy.deepcopy(pod)
        meta = new["metadata"]
        meta.setdefault("namespace", "default")
        key = (meta["namespace"], meta["name"])
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        old = self._pods.get(key)
        self._pods[key] = new
        self._record(_Change(self._rv, old, new))
        return meta["resourceVersion"]

    def delete(self, name: str, namespace: str = "default") -> None:
        """Remove a pod (DELETED, carrying its last state at a new resourceVersion)."""
        old = self._pods.pop((namespace, name))
        self._rv += 1
        last = copy.deepcopy(old)
        last["metadata"]["resourceVersion"] = str(self._rv)
        self._record(_Change(self._rv, last, None))

    def compact(self) -> None:
        """Forget history up to now: a watch from an older resourceVersion gets 410 Gone."""
        self.compacted_rv = self._rv
        self._history.clear()

    def bookmark(self) -> None:
        """Send every open watch a BOOKMARK at the current resourceVersion."""
        obj = {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": str(self._rv)}}
        for watch in self._watches:
            watch.queue.put_nowait(_line({"type": "BOOKMARK", "object": obj}))

    def expire_watches(self) -> None:
        """End every open watch with an ERROR event carrying 410 Gone, as the API server does."""
        gone = _gone(self.compacted_rv, self._rv)
        for watch in self._watches:
            watch.queue.put_nowait(_line({"type": "ERROR", "object": gone}))
            watch.queue.put_nowait(_END)

    def end_watches(self) -> None:
        """End every open watch cleanly (final chunk sent), as on a server-side timeout."""
        for watch in self._watches:
            watch.queue.put_nowait(_END)

    def drop_watches(self) -> None:
        """Cut every open watch connection without ending the chunked body."""
        for watch in self._watches:
            watch.queue.put_nowait(_DROP)

    def push_raw(self, line: bytes) -> None:
        """Send `line` (plus a newline) as-is to every open watch."""
        for watch in self._watches:
            watch.queue.put_nowait(line.rstrip(b"\n") + b"\n")

    def _record(self, change: _Change) -> None:
        self._history.append(change)
        for watch in self._watches:
            watch.offer(change)

    # -- the HTTP side ---------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        query = dict(request.query)
        watching = query.get("watch") in ("true", "1")
        self.requests.append(RecordedRequest("watch" if watching else "list", namespace, query))
        try:
            selector = parse_selector(query.get("labelSelector", ""))
        except SelectorError as exc:
            return _status_response(400, "BadRequest", str(exc))
        if watching:
            return await self._watch(request, namespace, selector, query.get("resourceVersion"))
        if self.fail_lists > 0:
            self.fail_lists -= 1
            return _status_response(500, "InternalError", "etcd is having a bad day")
        items = [
            pod
            for (ns, _), pod in sorted(self._pods.items())
            if ns == namespace and selector.matches(_labels(pod))
        ]
        return web.json_response(
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }
        )

    async def _watch(
        self, request: web.Request, namespace: str, selector: Selector, rv_text: str | None
    ) -> web.StreamResponse:
        watch = _Watch(namespace, selector)
        if rv_text in (None, "", "0"):
            for pod in (p for (ns, _), p in sorted(self._pods.items()) if ns == namespace):
                if selector.matches(_labels(pod)):
                    watch.queue.put_nowait(_line({"type": "ADDED", "object": pod}))
        else:
            try:
                since = int(rv_text)
            except ValueError:
                return _status_response(400, "BadRequest", f"invalid resourceVersion {rv_text!r}")
            if since < self.compacted_rv:
                gone = _gone(since, self.compacted_rv)
                if not self.gone_as_event:
                    return web.json_response(gone, status=410)
                watch.queue.put_nowait(_line({"type": "ERROR", "object": gone}))
                watch.queue.put_nowait(_END)
            else:
                for change in self._history:
                    if change.rv > since:
                        watch.offer(change)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        self._watches.add(watch)
        self.watches_opened += 1
        try:
            while True:
                item = await watch.queue.get()
                if item == _END:
                    await response.write_eof()
                    return response
                if item == _DROP:
                    assert request.transport is not None
                    request.transport.abort()
                    return response
                assert isinstance(item, bytes)
                await response.write(item)
        except ConnectionResetError:  # the client went away first
            return response
        finally:
            self._watches.discard(watch)


def _gone(requested: int, oldest: int) -> Json:
    return status_object(410, "Expired", f"too old resource version: {requested} ({oldest})")


def _status_response(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(status_object(code, reason, message), status=code)
