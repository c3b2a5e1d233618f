"""Label selector parsing: the old parser (remainder sliced per term) vs the linear one.

    .venv/bin/python bench/selector.py [--skip-old-1mib]

The old parser is the verbatim copy kept as the test oracle (tests/selector_oracle.py). Rows are
legal selectors of about 1 KB, 10 KB and 60 KB (at most 256 terms, so the new caps accept them:
`in`/`notin` sets, bare keys and `!key`, the terms that made the old parser copy), and the
issue's ~1 MiB selector of short terms. For that one the new parser's answer is a refusal (over
64 KiB), so the table also shows the linear parser with the caps lifted, to show the time is
linear in the text and not only cut short by the cap. All rows run in this one process.
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from selector_oracle import old_parse_selector

import datalayer.selector as selector_module
from datalayer.selector import MAX_REQUIREMENTS, SelectorError, parse_selector

from common import print_table, progress, write_json


def few_long_terms(target: int, terms: int = MAX_REQUIREMENTS) -> str:
    """About `target` characters in `terms` terms cycling through in, notin, key and !key."""
    out = [("!" if i % 4 == 3 else "") + f"k{i}" for i in range(terms)]
    sets = [i for i in range(terms) if i % 4 < 2]
    size, j = len(",".join(out)), 0
    values: dict[int, list[str]] = {i: [] for i in sets}
    while size < target:  # grow the value sets round-robin until the text is `target` long
        i = sets[j % len(sets)]
        value = f"v{j}"
        values[i].append(value)
        size += len(value) + (len(" notin ()") if len(values[i]) == 1 else 1)
        j += 1
    for i in sets:
        if values[i]:
            out[i] += f" {'in' if i % 4 == 0 else 'notin'} ({','.join(values[i])})"
    return ",".join(out)


def many_short_terms(target: int) -> str:
    """The issue's shape: ~1 MiB of short legal terms (bare keys, every 8th an `in` set)."""
    out, size, i = [], 0, 0
    while size < target:
        term = f"z{i} in (a,b)" if i % 8 == 0 else f"g{i}"
        out.append(term)
        size += len(term) + 1
        i += 1
    return ",".join(out)


def seconds(fn: Callable[[], object], budget: float = 0.5) -> float:
    """Best per-call time, with as many calls per round as fit in `budget`."""
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    if once > budget:
        return once
    number = max(1, int(budget / max(once, 1e-7) / 5))
    return min(timeit.Timer(fn).repeat(repeat=5, number=number)) / number


def outcome(text: str) -> str:
    try:
        return f"parsed, {len(parse_selector(text).requirements)} terms"
    except SelectorError as exc:
        return "refused: " + str(exc).rsplit(": ", 1)[-1].split(" characters, ")[-1]


def uncapped(text: str) -> object:
    """The linear parser with both caps lifted (length cap is in parse_selector)."""
    saved = selector_module.MAX_REQUIREMENTS
    selector_module.MAX_REQUIREMENTS = len(text) + 1
    try:
        return selector_module._Parser(text).parse()
    finally:
        selector_module.MAX_REQUIREMENTS = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-old-1mib", action="store_true", help="the old parser takes seconds")
    args = parser.parse_args()
    cases = [
        ("1 KB, 64 terms", few_long_terms(1_000, terms=64)),
        ("10 KB, 256 terms", few_long_terms(10_000)),
        ("60 KB, 256 terms", few_long_terms(60_000)),
        ("~1 MiB, short terms", many_short_terms(1024 * 1024)),
    ]
    rows, results = [], []
    for name, text in cases:
        progress(f"{name}: {len(text):,} characters")
        assert uncapped(text) == old_parse_selector(text).requirements or len(text) > 100_000
        old = None
        if not (args.skip_old_1mib and len(text) > 100_000):
            old = seconds(lambda t=text: old_parse_selector(t))  # type: ignore[misc]
        new = seconds(lambda t=text: outcome(t))  # type: ignore[misc]
        lifted = seconds(lambda t=text: uncapped(t))  # type: ignore[misc]
        rows.append(
            [
                name,
                f"{len(text):,}",
                "-" if old is None else f"{old * 1e3:,.2f} ms",
                f"{new * 1e3:,.3f} ms",
                f"{lifted * 1e3:,.2f} ms",
                "-" if old is None else f"{old / lifted:,.0f}x",
                outcome(text),
            ]
        )
        results.append({"case": name, "chars": len(text), "old_s": old, "new_s": new})
    print_table(
        "Label selector parse time (best of 5)",
        [
            "selector",
            "chars",
            "old parser",
            "new (with caps)",
            "new, caps lifted",
            "old/new",
            "new parser's answer",
        ],
        rows,
    )
    print(f"\n(json: {write_json('selector', {'rows': results})})")


if __name__ == "__main__":
    main()
