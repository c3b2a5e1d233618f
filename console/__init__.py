"""The operator's commands: `datalayer list`, `get NAME` and `watch`.

Registering them imports nothing heavy: rich and the renderers load only when one of these
commands runs, so `datalayer serve` starts as fast as before.
"""

from __future__ import annotations

import argparse
from typing import Any

from console.connect import add_connection_flags

SORTS = ("health", "name", "waiting", "running", "kv", "age")


def add_commands(sub: Any) -> None:
    """Add list/get/watch to the `datalayer` subparsers (`sub` is argparse's action)."""
    listing: argparse.ArgumentParser = sub.add_parser(
        "list", allow_abbrev=False, help="the endpoints the data layer holds, one per line"
    )
    listing.add_argument("-l", "--selector", default="", help="label selector, e.g. app=vllm")
    listing.add_argument("--sort", choices=SORTS, default="health", help="default: worst first")
    listing.add_argument("--json", action="store_true", help="the ListEndpoints response as JSON")
    add_connection_flags(listing)
    listing.set_defaults(handler=_list, log_level="warning")

    get: argparse.ArgumentParser = sub.add_parser(
        "get", allow_abbrev=False, help="everything the data layer holds about one endpoint"
    )
    get.add_argument("name")
    get.add_argument("--json", action="store_true", help="the Endpoint as JSON")
    add_connection_flags(get)
    get.set_defaults(handler=_get, log_level="warning")

    watch: argparse.ArgumentParser = sub.add_parser(
        "watch", allow_abbrev=False, help="a live table of the endpoints, redrawn in place"
    )
    watch.add_argument("-l", "--selector", default="", help="label selector, e.g. app=vllm")
    watch.add_argument("--sort", choices=SORTS, default="health", help="default: worst first")
    watch.add_argument(
        "--refresh", type=_seconds, default=1.0, help="seconds between re-lists (data age)"
    )
    watch.add_argument(
        "--duration", type=_seconds, default=None, help="stop after N seconds (default: Ctrl-C)"
    )
    watch.add_argument("--once", action="store_true", help="print one table and exit")
    add_connection_flags(watch)
    watch.set_defaults(handler=_watch, log_level="warning")


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _list(args: argparse.Namespace) -> int:
    from console.commands import list_command, run_command

    return run_command(args, list_command)


def _get(args: argparse.Namespace) -> int:
    from console.commands import get_command, run_command

    return run_command(args, get_command)


def _watch(args: argparse.Namespace) -> int:
    from console.commands import run_command, watch_command

    return run_command(args, watch_command)
