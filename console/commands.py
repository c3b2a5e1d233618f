"""`datalayer list`, `get NAME` and `watch`: what the data layer sees, from a terminal.

`watch` keeps a Watch stream (the same `EndpointMirror` a scheduler uses) for changes, and
lists the endpoints every `--refresh` seconds as well: a poll that reads the same values
again refreshes `update_time` without an event (see the README), so only a re-list keeps
the AGE column honest for an idle pod.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from console.connect import UsageError, describe_rpc_error, open_client
from console.render import endpoint_detail, endpoints_table, summary_line
from console.rows import EndpointRow, sort_rows
from datalayer.client import DataLayerClient
from datalayer.v1 import datalayer_pb2 as pb

EXIT_ERROR = 1
EXIT_USAGE = 2
#: Width of the table when stdout is not a terminal, so a pipe gets whole lines.
PIPE_WIDTH = 250

Command = Callable[[argparse.Namespace, DataLayerClient, Console], Awaitable[int]]


def run_command(args: argparse.Namespace, command: Command, console: Console | None = None) -> int:
    """Run one console command; turn every expected failure into one line on stderr."""
    if console is None:
        console = Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH)

    async def main() -> int:
        async with open_client(args) as client:
            return await command(args, client, console)

    try:
        return asyncio.run(main())
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.aio.AioRpcError as exc:
        print(f"error: {describe_rpc_error(exc, args.server, args.timeout)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 0


def _to_dict(message: Any) -> dict[str, Any]:
    # Numbers stay numbers (not proto3 JSON's quoted int64s), so `jq` can compare them.
    out: dict[str, Any] = json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True,
        unquote_int64_if_possible=True,
    )
    return out


def _rows(endpoints: Any, now: float) -> list[EndpointRow]:
    return [EndpointRow.from_proto(endpoint, now) for endpoint in endpoints]


async def list_command(args: argparse.Namespace, client: DataLayerClient, console: Console) -> int:
    # Every page (the client follows `next_page_token`), so no 4 MiB limit applies here.
    listing = await client.list_endpoints(args.selector, timeout=args.timeout)
    if args.json:
        document = _to_dict(listing)
        document.pop("next_page_token", None)  # always empty once every page is merged
        print(json.dumps(document, indent=2))
        return 0
    rows = sort_rows(_rows(listing.endpoints, time.time()), args.sort)
    if not rows:
        console.print(f"no endpoints{f' match {args.selector!r}' if args.selector else ''}")
        return 0
    print_table(console, endpoints_table(rows))
    return 0


def print_table(console: Console, table: RenderableType) -> None:
    """Print; in a pipe, without the padding rich puts after the last column (for grep/awk)."""
    if console.is_terminal:
        console.print(table)
        return
    with console.capture() as capture:
        console.print(table)
    console.file.write("\n".join(line.rstrip() for line in capture.get().splitlines()) + "\n")


async def get_command(args: argparse.Namespace, client: DataLayerClient, console: Console) -> int:
    try:
        endpoint = await client.get_endpoint(args.name, timeout=args.timeout)
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        print(f"error: no endpoint named {args.name!r} at {args.server}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(_to_dict(endpoint), indent=2))
        return 0
    console.print(endpoint_detail(endpoint, EndpointRow.from_proto(endpoint, time.time())))
    return 0


async def watch_command(args: argparse.Namespace, client: DataLayerClient, console: Console) -> int:
    view = WatchView(client, console, args.selector, args.sort, args.refresh, args.timeout)
    await view.run(duration=args.duration, once=args.once)
    return 0


class WatchView:
    """The live table: endpoints from a Watch stream, ages from periodic re-lists."""

    def __init__(
        self,
        client: DataLayerClient,
        console: Console,
        selector: str = "",
        sort: str = "health",
        refresh: float = 1.0,
        timeout: float = 5.0,
    ) -> None:
        self.client = client
        self.console = console
        self.selector = selector
        self.sort = sort
        self.refresh = refresh
        self.timeout = timeout
        self.listed: dict[str, pb.Endpoint] = {}
        self.revision = 0
        #: Why the last re-list failed; shown above the table until one succeeds.
        self.error: str | None = None
        self.frames = 0
        self._changed = asyncio.Event()
        # The stream wants only the typed metrics (identity and status always come).
        self.mirror = client.mirror(
            selector=selector,
            attributes=("metrics",),
            on_response=lambda _: self._changed.set(),
            min_interval=0.2,
        )

    async def run(self, duration: float | None = None, once: bool = False) -> None:
        """Draw until `duration` seconds have passed (None: until cancelled or Ctrl-C)."""
        # The first list fails fast (one-line error, exit 1) when the server is unreachable.
        listing = await self.client.list_endpoints(self.selector, timeout=self.timeout)
        self._take(listing)
        if once:
            self.console.print(self.render())
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration if duration else None
        next_list = loop.time() + self.refresh
        async with self.mirror:
            with Live(
                self.render(),
                console=self.console,
                auto_refresh=False,
                redirect_stdout=False,
                redirect_stderr=False,
            ) as live:
                while deadline is None or loop.time() < deadline:
                    until = next_list if deadline is None else min(next_list, deadline)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, until - loop.time())):
                            await self._changed.wait()
                    self._changed.clear()
                    if loop.time() >= next_list:
                        await self._relist()
                        next_list = loop.time() + self.refresh
                    live.update(self.render(), refresh=True)

    async def _relist(self) -> None:
        try:
            listing = await self.client.list_endpoints(self.selector, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            self.error = describe_rpc_error(exc, self.client.target, self.timeout)
            return
        self._take(listing)

    def _take(self, listing: pb.ListEndpointsResponse) -> None:
        self.listed = {endpoint.name: endpoint for endpoint in listing.endpoints}
        self.revision = max(self.revision, listing.revision)
        self.error = None

    def rows(self, now: float) -> list[EndpointRow]:
        """The stream's view when it is synced (newest values), the last list's otherwise;
        the age is the younger of the two, since only a list sees same-value refreshes."""
        if not self.mirror.synced.is_set():
            return _rows(self.listed.values(), now)
        rows = []
        for name, endpoint in self.mirror.endpoints.items():
            row = EndpointRow.from_proto(endpoint, now)
            listed = self.listed.get(name)
            if listed is not None:
                listed_age = EndpointRow.from_proto(listed, now).age
                if listed_age is not None and (row.age is None or listed_age < row.age):
                    row = dataclasses.replace(row, age=listed_age)
            rows.append(row)
        return rows

    def render(self) -> RenderableType:
        self.frames += 1
        rows = sort_rows(self.rows(time.time()), self.sort)
        revision = max(self.revision, self.mirror.revision)
        header = Text(f"datalayer watch {self.client.target}  ", style="bold")
        header.append_text(summary_line(rows))
        header.append(f"  revision {revision}  {time.strftime('%H:%M:%S')}", style="dim")
        parts: list[RenderableType] = [header]
        if self.error is not None:
            parts.append(Text(f"{self.error}: showing the last state received", style="bold red"))
        parts.append(endpoints_table(rows, boxed=True))
        return Group(*parts)
