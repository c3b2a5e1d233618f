"""HTTP for mock pods: one aiohttp app, runner and site per pod, many pods per process.

Each pod is a separate listener on its own port, so the data layer sees separate endpoints
exactly as it would in a cluster, while one process can host a hundred of them for a
benchmark. Access logs are off and ``/metrics`` is a join of cached bytes, so the mock costs
little next to the scraper it is measuring.

Fault modes (slow, 500, garbage, truncated, oversize, reset, hang, flapping; see
``mockpod/faults.py``) wrap the data-layer-facing handlers as middleware, switched through
``POST /control {"fault": ...}``.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from mockpod.control import ControlError, apply_control
from mockpod.exposition import CONTENT_TYPE
from mockpod.faults import FAULTS, FaultBox, FaultError, fault_middleware, parse_fault
from mockpod.kv_pod import PodKvEvents, stand_in_tokens
from mockpod.openai import (
    ApiError,
    bad_request,
    completion_body,
    model_not_found,
    models_body,
    parse_completion,
)
from mockpod.page import HttpExchange
from mockpod.spec import PodSpec
from mockpod.state import PodState, RequestTooLong, UnknownModel

__all__ = ["MockPod", "PodGroup", "build_app", "serve_forever", "start_pods"]

log = logging.getLogger(__name__)


POD_STATE = web.AppKey("pod_state", PodState)
#: Set when the pod publishes KV-cache events (PodSpec.kv_events_port).
KV_EVENTS = web.AppKey("kv_events", PodKvEvents)
# Handlers finish in-flight requests on close for at most this long; tests close often.
SHUTDOWN_TIMEOUT = 1.0


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body).encode(), status=status, content_type="application/json"
    )


async def _metrics(request: web.Request) -> web.Response:
    state = request.app[POD_STATE]
    if state.spec.churn:
        state.churn()
    page = state.metrics.render()
    headers = {"Content-Type": CONTENT_TYPE}
    if state.spec.gzip and "gzip" in request.headers.get("Accept-Encoding", ""):
        page = gzip.compress(page, compresslevel=6)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=page, headers=headers)


async def _health(request: web.Request) -> web.Response:
    return web.Response(status=200)


def _record(
    request: web.Request, response: web.Response, request_bytes: int, started: float
) -> None:
    """Count an API call into the page's HTTP families, as vLLM's instrumentation would."""
    resource = request.match_info.route.resource
    body = response.body
    request.app[POD_STATE].metrics.record_http(
        HttpExchange(
            handler=resource.canonical if resource is not None else request.path,
            method=request.method,
            status=response.status,
            request_bytes=request_bytes,
            response_bytes=len(body) if isinstance(body, bytes) else 0,
            seconds=asyncio.get_running_loop().time() - started,
        )
    )


async def _models(request: web.Request) -> web.Response:
    started = asyncio.get_running_loop().time()
    state = request.app[POD_STATE]
    response = _json(models_body(state.spec, int(state.started_at)))
    _record(request, response, 0, started)
    return response


async def _completions(request: web.Request, *, chat: bool) -> web.Response:
    state = request.app[POD_STATE]
    started = asyncio.get_running_loop().time()
    raw = await request.read()
    try:
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"invalid JSON: {exc}") from exc
        parsed = parse_completion(body, chat=chat)
        kv_events = request.app.get(KV_EVENTS)
        if kv_events is not None and parsed.model in (state.spec.model, *state.spec.loras):
            kv_events.prefill(parsed.model, stand_in_tokens(body, chat=chat))
        try:
            result = await state.generate(
                parsed.model, parsed.prompt_tokens, parsed.max_tokens, parsed.n
            )
        except UnknownModel as exc:
            raise model_not_found(parsed.model) from exc
        except RequestTooLong as exc:
            raise bad_request(str(exc)) from exc
        response = _json(completion_body(parsed, result))
    except ApiError as exc:
        response = _json(exc.body(), status=exc.status)
    _record(request, response, len(raw), started)
    return response


async def _completion(request: web.Request) -> web.Response:
    return await _completions(request, chat=False)


async def _chat_completion(request: web.Request) -> web.Response:
    return await _completions(request, chat=True)


async def _get_control(request: web.Request) -> web.Response:
    return _json(request.app[POD_STATE].report())


async def _post_control(request: web.Request) -> web.Response:
    state = request.app[POD_STATE]
    try:
        body = await request.json()
    except ValueError:
        return _json({"error": "invalid JSON"}, status=400)
    faults = request.app[FAULTS]
    fault = faults.fault
    if isinstance(body, dict) and "fault" in body:
        body = dict(body)
        try:
            fault = parse_fault(body.pop("fault"))
        except FaultError as exc:
            return _json({"error": str(exc)}, status=400)
    kv_events = request.app.get(KV_EVENTS)
    if isinstance(body, dict) and "reset_prefix_cache" in body:
        body = dict(body)
        if body.pop("reset_prefix_cache") and kv_events is not None:
            kv_events.reset()
    try:
        apply_control(state, body)
    except ControlError as exc:
        return _json({"error": str(exc)}, status=400)
    faults.fault = fault
    return _json({**state.report(), "fault": faults.mode()})


def build_app(state: PodState, middlewares: Iterable[Middleware] = ()) -> web.Application:
    """The routes of one pod, bound to its state."""
    app = web.Application(middlewares=[fault_middleware, *middlewares])
    app[POD_STATE] = state
    app[FAULTS] = FaultBox()
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/health", _health)
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/completions", _completion)
    app.router.add_post("/v1/chat/completions", _chat_completion)
    app.router.add_get("/control", _get_control)
    app.router.add_post("/control", _post_control)
    return app


@dataclass
class MockPod:
    """A listening pod. ``port`` is the bound one (useful when the spec asked for 0)."""

    spec: PodSpec
    state: PodState
    host: str
    port: int
    runner: web.AppRunner

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_pod(spec: PodSpec, host: str = "127.0.0.1") -> MockPod:
    """Start one pod listening on ``spec.port`` (0: any free port)."""
    state = PodState(spec)
    app = build_app(state)
    if spec.kv_events_port is not None:
        _attach_kv_events(app, spec, host)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, spec.port, reuse_address=True, backlog=1024)
        await site.start()
        port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return MockPod(spec, state, host, port, runner)


def _attach_kv_events(app: web.Application, spec: PodSpec, host: str) -> None:
    kv_events = PodKvEvents(
        host=host,
        port=spec.kv_events_port or 0,
        replay_port=spec.kv_events_replay_port,
        model=spec.model,
        block_size=spec.block_size,
        capacity_blocks=spec.num_gpu_blocks,
        shape="map" if spec.kv_events_shape == "map" else "array",
    )
    app[KV_EVENTS] = kv_events

    async def close(_: web.Application) -> None:
        await kv_events.close()

    app.on_cleanup.append(close)


class PodGroup:
    """Pods hosted by this process; close them all with :meth:`close` or ``async with``."""

    def __init__(self, pods: Sequence[MockPod]) -> None:
        self.pods = list(pods)

    @property
    def ports(self) -> list[int]:
        return [pod.port for pod in self.pods]

    @property
    def urls(self) -> list[str]:
        return [pod.url for pod in self.pods]

    def __len__(self) -> int:
        return len(self.pods)

    def __getitem__(self, index: int) -> MockPod:
        return self.pods[index]

    async def close(self) -> None:
        pods, self.pods = self.pods, []
        await asyncio.gather(*(pod.close() for pod in pods))

    async def __aenter__(self) -> PodGroup:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def start_pods(specs: Iterable[PodSpec], host: str = "127.0.0.1") -> PodGroup:
    """Start every pod, or none: if one port is taken, those already started are closed."""
    pods: list[MockPod] = []
    try:
        for spec in specs:
            pods.append(await start_pod(spec, host))
    except BaseException:
        await PodGroup(pods).close()
        raise
    return PodGroup(pods)


async def serve_forever(
    specs: Iterable[PodSpec],
    host: str = "127.0.0.1",
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[PodGroup], None] | None = None,
) -> None:
    """Serve until ``stop`` is set or the task is cancelled, then close every pod."""
    group = await start_pods(specs, host)
    try:
        if on_ready is not None:
            on_ready(group)
        await (stop or asyncio.Event()).wait()
    finally:
        await group.close()
