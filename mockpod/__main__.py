"""``python -m mockpod``: the same command as ``datalayer mock-pod``.

Runs on uvloop when it is installed (the ``fast`` extra): serving a page costs the mock about
a fifth less CPU, which matters when one process hosts a hundred pods for a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio

from mockpod.cli import add_arguments, run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mockpod", description="Serve mock vLLM/SGLang pods."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))


if __name__ == "__main__":
    main()
