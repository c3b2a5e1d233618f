"""µs per payload: our selective scan + core-metrics extraction vs full parses.

    .venv/bin/python bench/parse.py [--repeat 2000]

Pages come from the mock pod (the real vLLM V1 format): one engine without LoRA (~56 KB) and
two data-parallel engines with LoRA (~96 KB). Two baselines, in the same run:

- prometheus_client's full text parse, in this process;
- Go's `expfmt` full parse (`TextParser.TextToMetricFamilies`, the upstream picker's parser):
  `bench/go-expfmt/main.go`, built here in GOPATH mode against Debian's
  `golang-github-prometheus-common-dev` (`scripts/install-go-toolchain` installs it) and run
  on the page files this script writes to bench/out/pages/. Without Go or that package the
  column says why it is missing.

The ratios are what to quote (both sides measured in this one run, best of 7 rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
import timeit
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from datalayer.model import EndpointSpec, EndpointUpdate
from mockpod.spec import PodSpec
from mockpod.state import PodState
from plugins.extractors.core_metrics.extractor import CoreMetricsExtractor
from plugins.shared.prometheus.samples import MetricSamples
from plugins.shared.prometheus.scan import SelectiveScanner

from common import OUT_DIR, print_table, progress, write_json

GO_SOURCE = Path(__file__).resolve().parent / "go-expfmt" / "main.go"
#: Where Debian's Go packages put their source (GOPATH mode, as examples/go-scheduler builds).
DEBIAN_GOPATH = "/usr/share/gocode"
EXPFMT = "github.com/prometheus/common/expfmt"

PAGES = {
    "vLLM V1, 1 engine, no LoRA": PodSpec(name="one"),
    "vLLM V1, 2 engines + LoRA": PodSpec(
        name="two", engines=2, loras=("sql-lora", "chat-lora"), max_lora=2
    ),
}


def best_us(fn: object, repeat: int, rounds: int = 7) -> float:
    timer = timeit.Timer(fn)  # type: ignore[arg-type]
    return min(timer.repeat(repeat=rounds, number=repeat)) / repeat * 1e6


def go_expfmt(pages: list[Path], repeat: int) -> tuple[dict[str, tuple[float, float]], str]:
    """(wall µs, CPU µs) per full parse of each page by Go's expfmt, the best of a run before
    and a run after the Python timings (the host is shared); ({}, why) when it cannot run."""
    go = shutil.which("go")
    if go is None:
        return {}, "no Go toolchain (scripts/install-go-toolchain)"
    if not (Path(DEBIAN_GOPATH) / "src" / EXPFMT).is_dir():
        return {}, "no golang-github-prometheus-common-dev (scripts/install-go-toolchain)"
    with tempfile.TemporaryDirectory(prefix="go-expfmt.") as work:
        env = {k: v for k, v in os.environ.items() if k != "GOFLAGS"}
        env |= {"GO111MODULE": "off", "GOPATH": f"{work}/gopath:{DEBIAN_GOPATH}"}
        env.setdefault("GOCACHE", str(Path(tempfile.gettempdir()) / "go-expfmt-gocache"))
        binary = Path(work) / "go-expfmt"
        build = subprocess.run(
            [go, "build", "-o", str(binary), str(GO_SOURCE)],
            env=env,
            capture_output=True,
            text=True,
        )
        if build.returncode != 0:
            return {}, f"go build failed: {build.stderr.strip().splitlines()[-1:]}"
        shutil.copy(binary, GO_BINARY)
    return go_expfmt_run(pages, repeat)


#: The built go-expfmt, kept for the second run.
GO_BINARY = OUT_DIR / "go-expfmt"


def go_expfmt_run(
    pages: list[Path], repeat: int, before: dict[str, tuple[float, float]] | None = None
) -> tuple[dict[str, tuple[float, float]], str]:
    run = subprocess.run(
        [str(GO_BINARY), "-repeat", str(repeat), *map(str, pages)],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        return {}, f"go-expfmt failed: {run.stderr.strip()}"
    out = {}
    for line in run.stdout.splitlines():
        row = json.loads(line)
        wall, cpu = float(row["us"]), float(row["cpu_us"])
        if before and row["path"] in before:
            wall, cpu = min(wall, before[row["path"]][0]), min(cpu, before[row["path"]][1])
        out[row["path"]] = (wall, cpu)
    return out, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    extractor = CoreMetricsExtractor("core", CoreMetricsExtractor.Parameters())
    scanner = SelectiveScanner(extractor.required_names())
    endpoint = EndpointSpec("pod", "127.0.0.1", 8000)
    rows = []
    results: dict[str, dict[str, object]] = {}
    timings: dict[str, tuple[float, float, float, float]] = {}
    pages_dir = OUT_DIR / "pages"
    pages_dir.mkdir(parents=True, exist_ok=True)
    page_files = {}
    for i, (title, spec) in enumerate(PAGES.items()):
        page = PodState(spec).metrics.render()
        page_files[title] = pages_dir / f"page{i}.txt"
        page_files[title].write_bytes(page)
    progress("timing Go expfmt")
    go_repeat = max(20, args.repeat // 10)
    go_us, go_missing = go_expfmt(list(page_files.values()), go_repeat)
    if go_missing:
        progress(f"Go expfmt skipped: {go_missing}")
    for title in PAGES:
        page = page_files[title].read_bytes()
        text = page.decode()

        def ours(page: bytes = page) -> None:
            extractor.extract(scanner.scan(page), endpoint, EndpointUpdate())

        def scan_only(page: bytes = page) -> None:
            scanner.scan(page)

        samples = scanner.scan(page)

        def extract_only(samples: MetricSamples = samples) -> None:
            extractor.extract(samples, endpoint, EndpointUpdate())

        def full(text: str = text) -> None:
            for _ in text_string_to_metric_families(text):
                pass

        progress(f"timing {title} ({len(page):,} bytes)")
        ours_us = best_us(ours, args.repeat)
        scan_us = best_us(scan_only, args.repeat)
        extract_us = best_us(extract_only, args.repeat)
        full_us = best_us(full, max(1, args.repeat // 200))
        timings[title] = (ours_us, scan_us, extract_us, full_us)
    if not go_missing:
        progress("timing Go expfmt again")
        go_us, go_missing = go_expfmt_run(list(page_files.values()), go_repeat, go_us)
    for title, (ours_us, scan_us, extract_us, full_us) in timings.items():
        page_len = page_files[title].stat().st_size
        go, go_cpu = go_us.get(str(page_files[title]), (None, None))
        rows.append(
            [
                title,
                page_len,
                ours_us,
                scan_us,
                extract_us,
                full_us,
                full_us / ours_us,
                go if go is not None else "n/a",
                go / ours_us if go is not None else "n/a",
                go_cpu if go_cpu is not None else "n/a",
                go_cpu / ours_us if go_cpu is not None else "n/a",
            ]
        )
        results[title] = {
            "bytes": page_len,
            "ours_us": ours_us,
            "scan_us": scan_us,
            "extract_us": extract_us,
            "prometheus_client_us": full_us,
            "ratio": full_us / ours_us,
            "go_expfmt_us": go,
            "go_ratio": go / ours_us if go is not None else None,
            "go_expfmt_cpu_us": go_cpu,
            "go_cpu_ratio": go_cpu / ours_us if go_cpu is not None else None,
            "go_missing": go_missing or None,
        }
    print_table(
        f"parse + extract, µs per payload ({time.strftime('%Y-%m-%d')})",
        [
            "page",
            "bytes",
            "scan+extract µs",
            "scan µs",
            "extract µs",
            "prometheus_client µs",
            "ratio",
            "Go expfmt µs",
            "Go ratio",
            "Go CPU µs",
            "Go CPU ratio",
        ],
        rows,
    )
    if go_missing:
        print(f"\nGo expfmt: not measured ({go_missing}).")
    else:
        print(
            "\nGo expfmt: wall-clock µs per parse (best of 7 rounds, of a run before and one "
            "after ours); Go CPU: user+system of all its threads per parse (its GC runs on the "
            "other core beside the parse). The target is judged on the wall-clock ratio."
        )
    write_json("parse", {"pages": results})


if __name__ == "__main__":
    main()
