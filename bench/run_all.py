"""Run every benchmark, one after the other, and write bench/RESULTS.md from that one run.

    .venv/bin/python bench/run_all.py            # ~11 minutes on a 2-core machine
    .venv/bin/python bench/run_all.py --quick    # shorter runs, for a smoke test

Each benchmark is a plain script that prints its table and writes bench/out/<name>.json; each
compares against its own baseline in the same run (prometheus_client and Go's expfmt, the
bare-client floor and aiohttp, per-stream serialization, the gRPC health check, 0 endpoints,
the old selector parser, a normal page). RESULTS.md gets the machine, the date, the commit, a
summary against the targets (fan-out and unary beside the previous RESULTS.md's figures), and
every table as printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import OUT_DIR, machine, progress

HERE = Path(__file__).resolve().parent


def benchmarks(quick: bool) -> list[tuple[str, list[str]]]:
    seconds = ["--seconds", "5" if quick else "15"]
    return [
        ("parse", ["--repeat", "300" if quick else "2000"]),
        (
            "collector",
            [
                "--pods",
                "100",
                "500",
                "--interval",
                "50",
                "250",
                "--pages",
                "static",
                "churn",
                *seconds,
            ],
        ),
        ("fanout", ["--subscribers", "10", "50", "--rate", "2000", *seconds]),
        ("unary", ["--seconds", "4" if quick else "8"]),
        (
            "memory",
            ["--endpoints", "0", "1000", "10000"]
            if not quick
            else ["--endpoints", "0", "1000", "--clients", "httptools"],
        ),
        ("selector", ["--skip-old-1mib"]),
        ("hostile", ["--rounds", "3" if quick else "5"]),
        ("cluster", ["--quick"] if quick else []),
        ("kv_index", ["--quick"] if quick else []),
    ]


#: Fan-out and unary must be no worse than these (RESULTS.md of 2026-11-23, one run): fan-out
#: p99 commit→receipt by subscribers; GetEndpoint calls/s and p99 by closed-loop callers.
PREVIOUS = "2026-11-23"
PREVIOUS_FANOUT_P99_MS = {10: 9.9, 50: 22.1}
PREVIOUS_GET = {4: (1780, 5.3), 32: (2481, 23.4)}


def _load(name: str) -> dict[str, Any]:
    path = OUT_DIR / f"{name}.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _fmt(value: float, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.0f}{unit}" if abs(value) >= 100 else f"{value:.1f}{unit}"


def summary() -> list[str]:
    """One line per target: what was measured in this run, against the target."""
    rows: list[list[str]] = []
    parse = _load("parse").get("pages", {})
    page = parse.get("vLLM V1, 1 engine, no LoRA")
    if page:
        go = page.get("go_ratio")
        go_text = (
            f"{_fmt(go, 'x')} Go expfmt ({_fmt(page['go_expfmt_us'], ' µs')})"
            if go is not None
            else f"Go expfmt not measured: {page.get('go_missing')}"
        )
        rows.append(
            [
                "parse+extract, 1-engine vLLM page",
                "≤ 30 µs, ≥ 60x Go expfmt",
                f"{_fmt(page['ours_us'], ' µs')}, {go_text}, "
                f"{_fmt(page['ratio'], 'x')} prometheus_client",
            ]
        )
    collector = _load("collector").get("runs", [])
    for run in collector:
        if run["client"] != "httptools":
            continue

        def other(client: str, run: dict[str, Any] = run) -> dict[str, Any] | None:
            return next(
                (
                    r
                    for r in collector
                    if r["client"] == client
                    and r["pods"] == run["pods"]
                    and r["interval_ms"] == run["interval_ms"]
                    and r["page"] == run["page"]
                ),
                None,
            )

        floor, aio = other("floor"), other("aiohttp")
        x_floor = (
            f" = {run['cpu_us_per_scrape'] / floor['cpu_us_per_scrape']:.2f}x floor "
            f"({_fmt(floor['cpu_us_per_scrape'], ' µs')})"
            if floor
            else ""
        )
        vs = f"; aiohttp {_fmt(aio['cpu_us_per_scrape'], ' µs')}" if aio else ""
        rows.append(
            [
                f"collector {run['pods']} pods @ {run['interval_ms']:g} ms, {run['page']}",
                "≤ 1.5x floor CPU/scrape, ≥ 95 % rate, age p99 ≤ 2x interval",
                f"{_fmt(run['cpu_us_per_scrape'], ' µs')}{x_floor}{vs}, "
                f"{_fmt(run['achieved_pct'], ' %')}, p99 {_fmt(run['age_p99_ms'], ' ms')}",
            ]
        )
    for run in _load("fanout").get("runs", []):
        if run["mode"] != "shared":
            continue
        base = next(
            (
                r
                for r in _load("fanout")["runs"]
                if r["mode"] == "baseline" and r["subscribers"] == run["subscribers"]
            ),
            None,
        )
        vs = f" (per-stream: {_fmt(base['latency_p99_ms'], ' ms')})" if base else ""
        before = PREVIOUS_FANOUT_P99_MS.get(run["subscribers"])
        goal = f"p99 ≤ 25 ms, no worse than {PREVIOUS} ({before:g} ms)" if before else "≤ 25 ms"
        rows.append(
            [
                f"fan-out {run['subscribers']} subscribers x {run['rate']:g} updates/s",
                goal,
                f"p99 {_fmt(run['latency_p99_ms'], ' ms')}{vs}, {_fmt(run['server_cores'])} cores",
            ]
        )
    unary = {(r["call"], r["clients"]): r for r in _load("unary").get("runs", [])}
    for (call, clients), get in sorted(unary.items()):
        if call != "GetEndpoint":
            continue
        floor = unary.get(("health", clients))
        vs = f" (health check: {_fmt(floor['calls_per_s'], '/s')})" if floor else ""
        before_get = PREVIOUS_GET.get(clients)
        rows.append(
            [
                f"GetEndpoint, {clients} closed-loop callers",
                f"no worse than {PREVIOUS} ({before_get[0]:,}/s, p99 {before_get[1]:g} ms)"
                if before_get
                else "≥ 4,000/s, p99 ≤ 5 ms",
                f"{_fmt(get['calls_per_s'], '/s')}{vs}, p99 {_fmt(get['p99_ms'], ' ms')}",
            ]
        )
    for run in _load("memory").get("runs", []):
        marginal = run.get("kib_per_additional_endpoint")
        if run["endpoints"] >= 10000 and marginal is not None:
            rows.append(
                [
                    f"memory, {run['endpoints']:,} endpoints, {run['client']}",
                    "≤ 4 KiB RSS per additional endpoint",
                    f"{marginal:.1f} KiB (after malloc_trim: "
                    f"{run.get('kib_per_additional_endpoint_trimmed') or float('nan'):.1f} KiB)",
                ]
            )
    lines = ["| target | goal | this run |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return lines


def _commit() -> str:
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
    )
    return proc.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="+", help="run only these benchmarks")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    tables: list[str] = []
    failed = []
    for name, argv in benchmarks(args.quick):
        if args.only and name not in args.only:
            continue
        progress(f"=== {name} {' '.join(argv)}")
        proc = subprocess.run(
            [sys.executable, str(HERE / f"{name}.py"), *argv],
            cwd=HERE,
            stdout=subprocess.PIPE,
            text=True,
            # gRPC logs a line per fork of a client process otherwise.
            env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
        )
        print(proc.stdout, flush=True)
        if proc.returncode != 0:
            failed.append(name)
        tables.append(f"<!-- {name}.py {' '.join(argv)} -->\n{proc.stdout.strip()}\n")
    info = machine()
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    text = [
        "# Benchmark results",
        "",
        f"One run of `bench/run_all.py{' --quick' if args.quick else ''}`, started {started}, "
        f"on commit {_commit()}.",
        "",
        f"- machine: {info['cores']} cores, {info['platform']}",
        f"- Python {info['python']}; {versions}",
        "- shared host: other work ran alongside; quote the ratios (each table carries its",
        "  baseline from the same run), not the absolute times",
        "",
        "## Against the targets",
        "",
        *summary(),
        "",
        "See bench/README.md for what each benchmark measures and why targets are missed.",
        "",
        *tables,
    ]
    if failed:
        text += ["", f"Failed: {', '.join(failed)}"]
    (HERE / "RESULTS.md").write_text("\n".join(text) + "\n")
    progress("wrote bench/RESULTS.md")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
