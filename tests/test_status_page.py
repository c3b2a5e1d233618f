"""`/status` and `/status.json` on the metrics port, and the page in a real headless browser.

The browser test needs Debian's `chromium` (scripts/install-browser). Without it the test
skips, unless DATALAYER_REQUIRE_BROWSER=1 (as in CI), which turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.status_html import PAGE
from server.status_page import MAX_LIMIT

from stack import Stack, eventually, free_port

#: Colours from the page's CSS: the stale row background, the stale and fresh state pills.
STALE_ROW_BG = (0xFC, 0xE8, 0xE6)
STALE_PILL = (0xC5, 0x22, 0x1F)
FRESH_PILL = (0x18, 0x80, 0x38)
WINDOW = (1400, 800)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
    # Virtual time runs the page's timers (three 2 s refreshes) without waiting for them,
    # and pauses while a fetch is in flight, so the DOM is dumped after real data arrived.
    "--virtual-time-budget=5000",
)


async def status_json(stack: Stack, query: str = "") -> Any:
    url = f"http://127.0.0.1:{stack.app.metrics_port}/status.json{query}"
    async with stack.http.get(url) as response:
        return response.status, await response.json()


async def all_fresh(stack: Stack) -> None:
    async def fresh() -> bool:
        listing = await stack.client.list_endpoints()
        return len(listing.endpoints) == 3 and not any(e.stale for e in listing.endpoints)

    await eventually(fresh, timeout=10, what="three fresh pods")


async def make_pod_a_stale_and_pod_b_busy(stack: Stack) -> None:
    """pod-a read once, then failing (stale, with a reason); pod-b loaded and fresh."""
    await all_fresh(stack)
    await stack.control(1, {"waiting": 7, "running": 3, "kv_cache_usage": 0.95})
    await stack.control(0, {"fault": "http500"})

    async def settled() -> bool:
        listing = await stack.client.list_endpoints()
        by_name = {e.name: e for e in listing.endpoints}
        return (
            len(by_name) == 3
            and by_name["pod-a"].stale
            and not by_name["pod-b"].stale
            and by_name["pod-b"].metrics.waiting_queue_size == 7
            and not by_name["pod-c"].stale
        )

    await eventually(settled, timeout=10, what="pod-a stale and pod-b at waiting=7")


async def test_status_json_explains_each_endpoint(stack: Stack) -> None:
    await make_pod_a_stale_and_pod_b_busy(stack)
    mirror = stack.client.mirror(selector="app=vllm", attributes=("metrics",))
    async with mirror:
        await mirror.synced.wait()
        status, body = await status_json(stack)
    assert status == 200
    assert body["instance_id"] == stack.app.store.instance_id
    assert body["synced"] is True
    assert body["counts"] == {"total": 3, "matching": 3, "stale": 1, "degraded": 0, "fresh": 2}
    names = [e["name"] for e in body["endpoints"]]
    assert names == ["pod-a", "pod-b", "pod-c"]  # worst first, then by name
    pod_a, pod_b, _ = body["endpoints"]
    assert pod_a["state"] == "stale"
    assert "HTTP 500" in pod_a["last_error"]
    (lane,) = pod_a["lanes"]
    assert lane["source"] == "metrics-data-source"
    assert lane["stale"] is True
    assert lane["polls"] > 0
    assert "HTTP 500" in lane["error"]
    assert lane["since_success"] >= 0.5  # the stack's staleness threshold
    assert pod_b["state"] == "fresh"
    assert (pod_b["waiting"], pod_b["running"], pod_b["kv"]) == (7, 3, 0.95)
    assert pod_b["engine"] == "vllm"
    assert pod_b["age"] < 0.5
    assert pod_b["lanes"][0]["stale"] is False
    subscribers = body["subscribers"]
    assert subscribers["count"] == 1
    assert subscribers["streams"][0]["selector"] == "app=vllm"
    assert subscribers["streams"][0]["parts"] == ["metrics"]
    config = body["config"]
    assert config["file"] == "stack.yaml"
    assert config["staleness_threshold"] == 0.5
    assert config["discovery"]["type"] == "file-discovery"
    (source,) = config["sources"]
    assert source["type"] == "metrics-data-source"
    assert [e["type"] for e in source["extractors"]] == ["core-metrics-extractor"]


async def test_status_json_filters_and_limits(stack: Stack) -> None:
    await make_pod_a_stale_and_pod_b_busy(stack)
    _, body = await status_json(stack, "?q=pod-b")
    assert [e["name"] for e in body["endpoints"]] == ["pod-b"]
    assert body["counts"]["matching"] == 1
    assert body["counts"]["total"] == 3
    _, body = await status_json(stack, "?selector=pod+in+(pod-a,pod-c)")
    assert [e["name"] for e in body["endpoints"]] == ["pod-a", "pod-c"]
    _, body = await status_json(stack, "?limit=1")
    assert [e["name"] for e in body["endpoints"]] == ["pod-a"]  # the worst one
    assert body["counts"]["stale"] == 1
    _, body = await status_json(stack, f"?limit={MAX_LIMIT * 10}")
    assert body["limit"] == MAX_LIMIT
    status, body = await status_json(stack, "?selector=a+in+(")
    assert status == 400
    assert "label selector" in body["error"]


async def test_status_page_is_one_self_contained_document(stack: Stack) -> None:
    async with stack.http.get(f"http://127.0.0.1:{stack.app.metrics_port}/status") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assert '"status.json?"' in page  # relative: works behind a path prefix too
    for external in ("http://", "https://", "<link", "src="):
        assert external not in page, f"the page refers to something outside it: {external}"
    assert "innerHTML" not in page  # pod-supplied text is only ever set as text


async def test_data_age_and_watch_send_metrics(stack: Stack) -> None:
    await make_pod_a_stale_and_pod_b_busy(stack)
    async with stack.client.mirror() as mirror:
        await mirror.synced.wait()
        await stack.control(2, {"waiting": 4})
        await mirror.wait_for(lambda m: m.endpoints["pod-c"].metrics.waiting_queue_size == 4)
    url = f"http://127.0.0.1:{stack.app.metrics_port}/metrics"
    async with stack.http.get(url) as response:
        text = await response.text()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    # pod-a has not been read for at least the staleness threshold; the others just were.
    assert samples['datalayer_data_age_seconds{quantile="1"}'] >= 0.5
    assert samples['datalayer_data_age_seconds{quantile="0.5"}'] < 0.5
    # The initial snapshot, the synced marker and pod-c's update were written and timed.
    assert samples["datalayer_watch_send_seconds_count"] >= 2
    assert samples["datalayer_watch_send_seconds_sum"] > 0

    # Timing the stream does not keep the handler alive: the subscriber goes when the client does.
    async def unsubscribed() -> bool:
        return not stack.app.hub.subscribers

    await eventually(unsubscribed, timeout=5, what="the closed stream's subscriber to go")


# --- the page in a real browser ---


def _chromium() -> str | None:
    found = shutil.which("chromium")
    if found is None and os.environ.get("DATALAYER_REQUIRE_BROWSER") == "1":
        pytest.fail(
            "DATALAYER_REQUIRE_BROWSER=1 but chromium is not installed (scripts/install-browser)"
        )
    if found is None:
        pytest.skip("chromium not installed: run scripts/install-browser (Debian, root)")
    return found


async def _chromium_run(chromium: str, profile: Path, *args: str) -> bytes:
    process = await asyncio.create_subprocess_exec(
        chromium,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    return stdout


class _Rows(HTMLParser):
    """The endpoint rows of the dumped DOM: name -> (state class, cell texts)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, tuple[str, list[str]]] = {}
        self.refreshes = 0
        self._current: str | None = None
        self._cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "body":
            self.refreshes = int(found.get("data-refreshes") or 0)
        elif tag == "tr" and found.get("data-name"):
            self._current = found["data-name"]
            self._cells = []
            self.rows[self._current] = (found.get("class") or "", self._cells)
        elif tag == "td" and self._current is not None:
            self._cells.append("")
            self._in_cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_cell = False
        elif tag == "tr":
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._in_cell and self._current is not None:
            self._cells[-1] += data


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit RGB/RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8, depth
    assert colour in (2, 6), colour  # RGB or RGBA
    assert interlace == 0
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        kind, row = line[0], bytearray(line[1:])
        for x in range(stride):
            left = row[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if kind == 1:
                row[x] = (row[x] + left) & 0xFF
            elif kind == 2:
                row[x] = (row[x] + up) & 0xFF
            elif kind == 3:
                row[x] = (row[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb_, pc = abs(p - left), abs(p - up), abs(p - corner)
                predictor = left if pa <= pb_ and pa <= pc else up if pb_ <= pc else corner
                row[x] = (row[x] + predictor) & 0xFF
        previous = row
        rgb = row if channels == 3 else bytearray(b for i, b in enumerate(row) if i % 4 != 3)
        rows.append(bytes(rgb))
    return width, height, rows


def count_colour(rows: list[bytes], colour: tuple[int, int, int]) -> int:
    needle = bytes(colour)
    return sum(1 for row in rows for i in range(0, len(row), 3) if row[i : i + 3] == needle)


async def test_status_page_renders_live_data_in_a_headless_browser(
    stack: Stack, tmp_path: Path
) -> None:
    chromium = _chromium()
    url = f"http://127.0.0.1:{stack.app.metrics_port}/status"
    profile = tmp_path / "chromium-profile"

    await all_fresh(stack)
    before = tmp_path / "before.png"
    await _chromium_run(chromium, profile, f"--screenshot={before}", url)

    await make_pod_a_stale_and_pod_b_busy(stack)
    dom = (await _chromium_run(chromium, profile, "--dump-dom", url)).decode()
    parsed = _Rows()
    parsed.feed(dom)
    assert set(parsed.rows) == {"pod-a", "pod-b", "pod-c"}, dom[-3000:]
    state_a, cells_a = parsed.rows["pod-a"]
    state_b, cells_b = parsed.rows["pod-b"]
    assert state_a == "state-stale"
    assert state_b == parsed.rows["pod-c"][0] == "state-fresh"
    assert cells_a[1] == "stale"
    assert "HTTP 500" in cells_a[-1]
    # name, state, engine, address, waiting, running, KV ...
    assert cells_b[:3] == ["pod-b", "fresh", "vllm"]
    assert cells_b[4:7] == ["7", "3", "95%"]
    assert parsed.refreshes >= 2, "the page did not refresh itself"

    after = tmp_path / "after.png"
    await _chromium_run(chromium, profile, f"--screenshot={after}", url)
    for shot in (before, after):
        assert shot.stat().st_size > 20_000, f"{shot}: a blank page?"
    width, height, rows_before = decode_png(before.read_bytes())
    assert (width, height) == WINDOW
    _, _, rows_after = decode_png(after.read_bytes())
    # A stale row is drawn in its own colour: none while all pods are fresh, a whole table
    # row of it (at least 1000 x 15 pixels) once pod-a is stale.
    assert count_colour(rows_before, STALE_ROW_BG) == 0
    assert count_colour(rows_after, STALE_ROW_BG) > 15_000
    assert count_colour(rows_after, STALE_PILL) > 200
    assert count_colour(rows_after, FRESH_PILL) > 200
    print(f"screenshots: {before} {after}")


async def test_status_json_gives_null_for_what_was_not_read(stack: Stack) -> None:
    """An unread value is JSON null (the page shows "-"), a value read as 0 is 0."""
    await all_fresh(stack)
    await stack.control(2, {"waiting": 0, "running": 0, "kv_cache_usage": 0.0})
    stack.write_endpoints()
    document = yaml.safe_load(stack.endpoints_file.read_text())
    labels = {"app": "vllm", "llm-d.ai/engine-type": "vllm"}
    document["endpoints"].append(
        {"name": "pod-never", "address": "127.0.0.1", "port": free_port(), "labels": labels}
    )
    stack.endpoints_file.write_text(yaml.safe_dump(document))

    async def listed() -> bool:
        _, body = await status_json(stack)
        names = {e["name"]: e for e in body["endpoints"]}
        return "pod-never" in names and names["pod-c"]["waiting"] == 0

    await eventually(listed, timeout=10, what="pod-never on /status.json, pod-c idle")
    _, body = await status_json(stack)
    by_name = {e["name"]: e for e in body["endpoints"]}
    never, idle = by_name["pod-never"], by_name["pod-c"]
    assert (never["waiting"], never["running"], never["kv"]) == (None, None, None)
    assert never["max_active_models"] is None
    assert (idle["waiting"], idle["running"], idle["kv"]) == (0, 0, 0.0)
    # The page renders null as "-" (no browser here: the headless test needs chromium).
    assert 'function num(v) { return v === null || v === undefined ? "-"' in PAGE
