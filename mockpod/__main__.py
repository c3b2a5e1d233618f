"""``python -m mockpod``: the same command as ``datalayer mock-pod``."""

from __future__ import annotations

import argparse
import asyncio

from mockpod.cli import add_arguments, run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mockpod", description=__doc__)
    add_arguments(parser)
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
