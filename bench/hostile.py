"""What one hostile page costs the scan + extract path, next to a normal vLLM page.

    .venv/bin/python bench/hostile.py [--rounds 5] [--rss-scans 40]

Issue 10 items 7 and 8. A scan runs on the event loop, so a page that takes a second to scan
stalls every other pod's data and every RPC for that second; a cache that keeps whatever a
page writes grows the process without bound. Pages (all in vLLM's real format, from the mock
pod's page generator, `mockpod/vllm_page.py`):

- normal: one engine, no LoRA (~59 KB).
- 100,000 series: the normal page plus 100,000 series of a wanted family
  (`vllm:num_requests_waiting`), each with its own label set.
- 1,000,000 adapters: the normal page plus one `vllm:lora_requests_info` series whose
  `running_lora_adapters` label lists 1,000,000 names (~8 MB).

Each page goes through the path every Prometheus source uses (`BodyDecoder`, then
`core-metrics-extractor`); the table gives the best of `--rounds` runs and the ratio to the
normal page. The RSS table scans `--rss-scans` pages whose 10 MB label changes every scrape
and prints the resident-set growth. Ratios from one run are what to quote.
"""

from __future__ import annotations

import argparse
import gc
import time

from datalayer.model import EndpointSpec, EndpointUpdate
from mockpod.spec import PodSpec
from mockpod.state import PodState
from plugins.extractors.core_metrics.extractor import CoreMetricsExtractor
from plugins.shared.payloads import BodyDecoder

from common import print_table, progress, rss_kib, write_json

ENDPOINT = EndpointSpec("pod", "127.0.0.1", 8000)


def normal_page() -> bytes:
    return PodState(PodSpec(name="one")).metrics.render()


def many_series_page(base: bytes, count: int = 100_000) -> bytes:
    lines = b"".join(
        b'vllm:num_requests_waiting{model_name="m",engine="%d"} 1.0\n' % i for i in range(count)
    )
    return base + lines


def adapters_line(count: int, tag: bytes = b"a") -> bytes:
    names = b",".join(tag + b"%d" % i for i in range(count))
    return (
        b'vllm:lora_requests_info{max_lora="2",running_lora_adapters="'
        + names
        + b'",waiting_lora_adapters=""} 1.7e9\n'
    )


def run_once(decoder: BodyDecoder, extractor: CoreMetricsExtractor, page: bytes) -> EndpointUpdate:
    out = EndpointUpdate()
    try:
        payload = decoder.decode(page)
    except Exception as exc:  # a refused page is a failed read, which is cheap
        out.error("payload", str(exc))
        return out
    extractor.extract(payload, ENDPOINT, out)  # type: ignore[arg-type]
    return out


def best_ms(
    decoder: BodyDecoder, extractor: CoreMetricsExtractor, page: bytes, rounds: int
) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run_once(decoder, extractor, page)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rss-scans", type=int, default=40)
    args = parser.parse_args()
    extractor = CoreMetricsExtractor("core", CoreMetricsExtractor.Parameters())
    decoder = BodyDecoder("prometheus", [extractor])
    base = normal_page()
    pages = {
        "normal vLLM page": base,
        "100,000 series of a wanted family": many_series_page(base),
        "1,000,000-adapter label": base + adapters_line(1_000_000),
    }
    rows = []
    results: dict[str, object] = {}
    normal_ms = 0.0
    for title, page in pages.items():
        progress(f"timing {title} ({len(page):,} bytes)")
        ms = best_ms(decoder, extractor, page, args.rounds)
        normal_ms = normal_ms or ms
        errors = run_once(decoder, extractor, page).errors
        rows.append(
            [title, len(page), ms, ms / normal_ms, ms * 1e3 / (len(page) / 1024), len(errors)]
        )
        results[title] = {"bytes": len(page), "ms": ms, "ratio": ms / normal_ms, "errors": errors}
    print_table(
        f"scan + extract of one page, best of {args.rounds} ({time.strftime('%Y-%m-%d')})",
        ["page", "bytes", "ms", "x normal", "µs per KB", "field errors"],
        rows,
    )

    progress(f"RSS over {args.rss_scans} scans of a page whose 10 MB label changes every scrape")
    label = adapters_line(1_250_000)  # ~10 MB
    for _ in range(3):  # warm up the allocator with one page's worth
        run_once(decoder, extractor, base + b"x" + label)
    gc.collect()
    before = rss_kib()
    for i in range(args.rss_scans):
        page = base + label.replace(b'="a0,', b'="a0,v%d,' % i, 1)
        run_once(decoder, extractor, page)
    gc.collect()
    after = rss_kib()
    growth_mib = (after - before) / 1024
    # The scanner's own byte accounting (absent before the caps existed).
    cache = getattr(getattr(decoder, "scanner", None), "cache_bytes", "n/a")
    print_table(
        "RSS growth under a changing 10 MB label",
        ["scans", "RSS before MiB", "RSS after MiB", "growth MiB", "per scan MiB", "cache bytes"],
        [
            [
                args.rss_scans,
                before / 1024,
                after / 1024,
                growth_mib,
                growth_mib / args.rss_scans,
                cache,
            ]
        ],
    )
    results["rss"] = {"scans": args.rss_scans, "before_kib": before, "after_kib": after}
    write_json("hostile", results)


if __name__ == "__main__":
    main()
