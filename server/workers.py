"""`datalayer serve --workers N`: N worker processes forming one replica group on one host.

One Python process scrapes on one core; a group of worker processes uses them all
with the design replicas already have (datalayer/cluster): each worker collects
the endpoints it owns and relays the rest from its peers, so any worker answers
for every endpoint. The workers share the public gRPC port through SO_REUSEPORT
(the kernel spreads connections over them) and each also listens on a private
loopback port, which is its group address: through the shared port a worker's
Watch of a peer could reach itself.

This process is only the supervisor: it starts the workers, restarts one that
dies (it rejoins the group like a restarted replica), ends them on SIGTERM, and
serves the one metrics and status port for the whole instance: `/metrics` is
every worker's exposition with a `worker` label added, anything else (`/status`,
`/status.json`) is answered by a live worker, whose view holds every endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import re
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp import web

log = logging.getLogger("datalayer.workers")

#: A worker that dies is started again after this long.
RESTART_DELAY = 1.0
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?( .*)$")


def _die_with_parent() -> None:
    """In the worker, before exec: SIGTERM when the supervisor dies, however it dies (a
    SIGKILL leaves it no chance to stop them), so no orphan keeps scraping."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Worker:
    index: int
    grpc_port: int
    metrics_port: int
    process: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def worker_argv(serve_argv: Sequence[str], worker: Worker, peers: Sequence[str]) -> list[str]:
    """The worker's command: the supervisor's own `serve` flags, less `--workers` and the
    metrics port (the supervisor's), plus the worker's private addresses."""
    args: list[str] = []
    skip = False
    for arg in serve_argv:
        if skip:
            skip = False
            continue
        if arg in ("--workers", "--metrics-port", "--metrics-host"):
            skip = True
            continue
        if arg.startswith(("--workers=", "--metrics-port=", "--metrics-host=")):
            continue
        args.append(arg)
    return [
        sys.executable,
        "-c",
        "import sys; from server.cli import main; sys.exit(main(sys.argv[1:]))",
        "serve",
        *args,
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        str(worker.metrics_port),
        "--worker-address",
        worker.address,
        "--worker-peers",
        ",".join(peers),
    ]


def merge_expositions(texts: Sequence[tuple[int, str]]) -> str:
    """Several workers' expositions as one: every sample gets `worker="N"`, and the samples
    of each family stay together under one HELP/TYPE (the text format requires it)."""
    families: dict[str, tuple[list[str], list[str]]] = {}
    for worker, text in texts:
        family = ""
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                family = line.split(" ", 3)[2]
                meta, _ = families.setdefault(family, ([], []))
                if line not in meta and len(meta) < 2:
                    meta.append(line)
                continue
            match = _SAMPLE.match(line)
            if match is None:
                continue
            name, _, labels, rest = match.groups()
            inner = f'worker="{worker}"' + (f",{labels}" if labels else "")
            families.setdefault(family or name, ([], []))[1].append(f"{name}{{{inner}}}{rest}")
    out = [line for meta, samples in families.values() for line in (*meta, *samples)]
    return "\n".join(out) + "\n"


class Supervisor:
    """Owns the worker processes and the instance's metrics/status server."""

    def __init__(
        self,
        serve_argv: Sequence[str],
        count: int,
        metrics_host: str,
        metrics_port: int | None,
    ) -> None:
        self.serve_argv = list(serve_argv)
        self.workers = [Worker(i, free_port(), free_port()) for i in range(count)]
        self.metrics_host = metrics_host
        self.metrics_port = metrics_port
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False

    async def run(self, stop: asyncio.Event) -> int:
        peers = [w.address for w in self.workers]
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            for worker in self.workers:
                argv = worker_argv(self.serve_argv, worker, peers)
                self._tasks.append(
                    asyncio.create_task(self._keep(worker, argv), name=f"worker {worker.index}")
                )
            if self.metrics_port is not None:
                await self._serve_http()
            log.info(
                "%d workers: group %s; metrics and status on port %s",
                len(self.workers),
                ", ".join(peers),
                self.metrics_port,
            )
            await stop.wait()
        finally:
            await self.close()
        return 0

    async def _keep(self, worker: Worker, argv: list[str]) -> None:
        """Run the worker; start it again when it dies (not when we stop it)."""
        while True:
            worker.process = await asyncio.create_subprocess_exec(
                *argv, preexec_fn=_die_with_parent
            )
            code = await worker.process.wait()
            if self._stopping:
                return
            log.warning("worker %d exited (%s); restarting it", worker.index, code)
            await asyncio.sleep(RESTART_DELAY)

    async def close(self) -> None:
        self._stopping = True
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            if worker.process is not None:
                try:
                    await asyncio.wait_for(worker.process.wait(), 10)
                except TimeoutError:
                    worker.process.kill()
                    await worker.process.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _serve_http(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_route("GET", "/{tail:.*}", self._proxy)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        assert self.metrics_port is not None
        await web.TCPSite(runner, self.metrics_host, self.metrics_port).start()
        self._runner = runner

    async def _fetch(
        self, worker: Worker, path: str, headers: dict[str, str]
    ) -> tuple[int, bytes, str]:
        assert self._session is not None
        url = f"http://127.0.0.1:{worker.metrics_port}{path}"
        async with self._session.get(url, headers=headers) as response:
            return response.status, await response.read(), response.content_type

    async def _metrics(self, request: web.Request) -> web.Response:
        texts: list[tuple[int, str]] = []
        for worker in self.workers:
            try:
                status, body, _ = await self._fetch(worker, "/metrics", {})
            except (aiohttp.ClientError, TimeoutError):
                continue  # a worker restarting: its series are missing from this scrape
            if status == 200:
                texts.append((worker.index, body.decode()))
        return web.Response(text=merge_expositions(texts), content_type="text/plain")

    async def _proxy(self, request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
        for worker in self.workers:
            try:
                status, body, kind = await self._fetch(worker, request.path_qs, headers)
            except (aiohttp.ClientError, TimeoutError):
                continue
            return web.Response(status=status, body=body, content_type=kind)
        return web.Response(status=503, text="no worker is up\n")
