"""Mock vLLM pods in a process of their own, counting the scrapes each one serves.

Run as a script: `python tests/cluster_pods.py --count 60` starts 60 pods on free
ports, prints one JSON line `{"pods": {name: port}, "hits": port}` and serves
`GET /hits` (scrapes of `/metrics` per pod since start) on that port until killed.
A replica group's tests count these to tell "collected once" from "collected
twice"; in their own process the pods' CPU does not slow the test's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mockpod.server import build_app
from mockpod.spec import PodSpec
from mockpod.state import PodState


def _counting(hits: Counter[str], name: str) -> Middleware:
    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/metrics":
            hits[name] += 1
        return await handler(request)

    return count


async def main(count: int, prefix: str, churn: bool = False) -> None:
    hits: Counter[str] = Counter()
    runners: list[web.AppRunner] = []
    ports: dict[str, int] = {}
    for i in range(count):
        name = f"{prefix}-{i}"
        app = build_app(PodState(PodSpec(name=name, churn=churn)), [_counting(hits, name)])
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
        ports[name] = int(runner.addresses[0][1])
        runners.append(runner)

    async def report(request: web.Request) -> web.Response:
        return web.json_response(dict(hits))

    control = web.Application()
    control.router.add_get("/hits", report)
    control_runner = web.AppRunner(control, access_log=None, handle_signals=False)
    await control_runner.setup()
    await web.TCPSite(control_runner, "127.0.0.1", 0).start()
    print(json.dumps({"pods": ports, "hits": int(control_runner.addresses[0][1])}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--prefix", default="pod")
    parser.add_argument("--churn", action="store_true", help="gauges change on every scrape")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(args.count, args.prefix, args.churn))
