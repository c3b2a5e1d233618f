"""µs per payload: our selective scan + core-metrics extraction vs prometheus_client's full parse.

    .venv/bin/python bench/parse.py [--repeat 2000]

Pages come from the mock pod (the real vLLM V1 format): one engine without LoRA (~59 KB) and
two data-parallel engines with LoRA (~100 KB). Both paths run in this one process, so the
ratio is what to quote.
"""

from __future__ import annotations

import argparse
import time
import timeit

from prometheus_client.parser import text_string_to_metric_families

from datalayer.model import EndpointSpec, EndpointUpdate
from mockpod.spec import PodSpec
from mockpod.state import PodState
from plugins.extractors.core_metrics.extractor import CoreMetricsExtractor
from plugins.shared.prometheus.scan import SelectiveScanner

from common import print_table, progress, write_json

PAGES = {
    "vLLM V1, 1 engine, no LoRA": PodSpec(name="one"),
    "vLLM V1, 2 engines + LoRA": PodSpec(
        name="two", engines=2, loras=("sql-lora", "chat-lora"), max_lora=2
    ),
}


def best_us(fn: object, repeat: int, rounds: int = 7) -> float:
    timer = timeit.Timer(fn)  # type: ignore[arg-type]
    return min(timer.repeat(repeat=rounds, number=repeat)) / repeat * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    extractor = CoreMetricsExtractor("core", CoreMetricsExtractor.Parameters())
    scanner = SelectiveScanner(extractor.required_names())
    endpoint = EndpointSpec("pod", "127.0.0.1", 8000)
    rows = []
    results = {}
    for title, spec in PAGES.items():
        page = PodState(spec).metrics.render()
        text = page.decode()

        def ours(page: bytes = page) -> None:
            extractor.extract(scanner.scan(page), endpoint, EndpointUpdate())

        def scan_only(page: bytes = page) -> None:
            scanner.scan(page)

        samples = scanner.scan(page)

        def extract_only(samples: object = samples) -> None:
            extractor.extract(samples, endpoint, EndpointUpdate())

        def full(text: str = text) -> None:
            for _ in text_string_to_metric_families(text):
                pass

        progress(f"timing {title} ({len(page):,} bytes)")
        ours_us = best_us(ours, args.repeat)
        scan_us = best_us(scan_only, args.repeat)
        extract_us = best_us(extract_only, args.repeat)
        full_us = best_us(full, max(1, args.repeat // 200))
        rows.append([title, len(page), ours_us, scan_us, extract_us, full_us, full_us / ours_us])
        results[title] = {
            "bytes": len(page),
            "ours_us": ours_us,
            "scan_us": scan_us,
            "extract_us": extract_us,
            "prometheus_client_us": full_us,
            "ratio": full_us / ours_us,
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
        ],
        rows,
    )
    write_json("parse", {"pages": results})


if __name__ == "__main__":
    main()
