"""`datalayer list`, `get` and `watch` against a live stack, as an operator runs them."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from console.commands import WatchView
from console.rows import EndpointRow, format_age, format_lora, health_state
from server.security import TlsFiles

from certs import make_pki
from stack import Stack, eventually, free_port, running_stack

DATALAYER = str(Path(sys.executable).with_name("datalayer"))
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TOKEN = "console-test-token"


async def datalayer(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the CLI without blocking the loop the stack serves on."""
    process = await asyncio.create_subprocess_exec(
        DATALAYER,
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def server(stack: Stack) -> list[str]:
    return ["-s", f"127.0.0.1:{stack.app.grpc_port}"]


async def settle(stack: Stack) -> None:
    """pod-a read, then failing (stale); pod-b loaded; pod-c idle and fresh."""

    async def fresh() -> bool:
        listing = await stack.client.list_endpoints()
        return len(listing.endpoints) == 3 and not any(e.stale for e in listing.endpoints)

    await eventually(fresh, timeout=10, what="three fresh pods")
    await stack.control(1, {"waiting": 7, "running": 3, "kv_cache_usage": 0.95})
    await stack.control(1, {"running_lora": ["sql-lora"], "waiting_lora": ["chat-lora"]})
    await stack.control(0, {"fault": "http500"})

    async def settled() -> bool:
        by_name = {e.name: e for e in (await stack.client.list_endpoints()).endpoints}
        return (
            by_name["pod-a"].stale
            and by_name["pod-b"].metrics.waiting_queue_size == 7
            and list(by_name["pod-b"].metrics.active_models) == ["sql-lora"]
        )

    await eventually(settled, timeout=10, what="pod-a stale and pod-b loaded")


def table_lines(text: str) -> dict[str, str]:
    """The row of each pod in a rendered table, by pod name (the first column)."""
    rows: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split()
        if words and words[0].startswith("pod-"):
            rows[words[0]] = line
    return rows


async def test_list_prints_a_table_worst_first(stack: Stack) -> None:
    await settle(stack)
    code, out, err = await datalayer("list", *server(stack))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "NAME", "ENGINE", "WAITING", "RUNNING", "KV", "LORA", "AGE", "STATE", "LAST", "ERROR"
    ]  # fmt: skip
    # A long LAST ERROR (it names the fields that expired) wraps onto continuation lines.
    assert [line.split()[0] for line in lines[1:] if line.startswith("pod-")] == [
        "pod-a",
        "pod-b",
        "pod-c",
    ]
    rows = table_lines(out)
    assert " stale  PollError: HTTP 500 Internal Server Error" in rows["pod-a"]
    assert rows["pod-b"].split()[:5] == ["pod-b", "vllm", "7", "3", "95%"]
    assert "sql-lora 1/2 (waiting: chat-lora)" in rows["pod-b"]
    assert rows["pod-c"].split()[-2:] == ["fresh", "-"]
    assert all(line == line.rstrip() for line in lines), "trailing blanks in a pipe"

    code, out, _ = await datalayer("list", *server(stack), "-l", "pod in (pod-b,pod-c)")
    assert code == 0
    assert list(table_lines(out)) == ["pod-b", "pod-c"]
    code, out, _ = await datalayer("list", *server(stack), "--sort", "waiting")
    assert next(iter(table_lines(out))) == "pod-b"


async def test_list_and_get_json(stack: Stack) -> None:
    await settle(stack)
    code, out, err = await datalayer("list", *server(stack), "--json")
    assert code == 0, err
    listing = json.loads(out)
    assert listing["instance_id"] == stack.app.store.instance_id
    by_name = {e["name"]: e for e in listing["endpoints"]}
    assert set(by_name) == {"pod-a", "pod-b", "pod-c"}
    assert by_name["pod-b"]["metrics"]["waiting_queue_size"] == 7  # a number, not "7"
    assert by_name["pod-a"]["stale"] is True
    assert by_name["pod-c"]["metrics"]["waiting_queue_size"] == 0  # zeros are printed too

    code, out, err = await datalayer("get", "pod-b", *server(stack), "--json")
    assert code == 0, err
    endpoint = json.loads(out)
    assert endpoint["name"] == "pod-b"
    assert endpoint["metrics"]["active_models"] == ["sql-lora"]
    assert endpoint["port"] == stack.pods[1].port


async def test_get_shows_everything_about_one_endpoint(stack: Stack) -> None:
    await settle(stack)
    code, out, err = await datalayer("get", "pod-a", *server(stack))
    assert code == 0, err
    fields = {line[:12].strip(): line[12:].strip() for line in out.splitlines()}
    assert fields["name"] == "pod-a"
    assert fields["address"] == f"127.0.0.1:{stack.pods[0].port}"
    assert fields["state"] == "stale"
    assert "HTTP 500" in fields["last error"]
    assert fields["labels"] == "app=vllm, llm-d.ai/engine-type=vllm, pod=pod-a"
    assert float(fields["data age"].rstrip("s")) >= 0.5

    code, out, err = await datalayer("get", "no-such-pod", *server(stack))
    assert code == 1
    assert out == ""
    assert err == f"error: no endpoint named 'no-such-pod' at 127.0.0.1:{stack.app.grpc_port}\n"


@pytest.mark.parametrize(
    "command", [["list"], ["list", "--json"], ["get", "pod-a"], ["watch"], ["watch", "--once"]]
)
async def test_unreachable_server_is_one_line_and_exit_1(command: list[str]) -> None:
    target = f"127.0.0.1:{free_port()}"
    code, out, err = await datalayer(*command, "-s", target)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: cannot reach the data layer at {target}: "), err
    assert "Traceback" not in err


async def test_flag_problems_are_usage_errors(tmp_path: Path) -> None:
    code, _, err = await datalayer("list", "--tls-cert", "c.pem")
    assert (code, err) == (2, "error: --tls-cert and --tls-key go together\n")
    missing = tmp_path / "nope.pem"
    code, _, err = await datalayer("list", "--tls-ca", str(missing))
    assert (code, err) == (2, f"error: {missing}: no such file\n")
    empty = tmp_path / "token"
    empty.write_text("")
    code, _, err = await datalayer("list", "--token-file", str(empty))
    assert (code, err) == (2, f"error: {empty}: the token file is empty\n")


async def test_token_and_tls_flags_reach_a_guarded_server(tmp_path: Path) -> None:
    ca, server_pem, client_pem = make_pki(tmp_path)
    tls = TlsFiles(server_pem.cert, server_pem.key, client_ca=ca.cert)
    async with running_stack(tmp_path, tls=tls, token=TOKEN) as stack:
        target = ["-s", f"127.0.0.1:{stack.app.grpc_port}"]
        mtls = ["--tls-ca", str(ca.cert), "--tls-cert", str(client_pem.cert)]
        mtls += ["--tls-key", str(client_pem.key)]
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")

        code, _, err = await datalayer("list", *target, *mtls, env={"DATALAYER_TOKEN": ""})
        assert code == 1
        assert "refused the call: missing or invalid bearer token" in err
        assert err.count("\n") == 1

        async def listed(*auth: str, env: dict[str, str] | None = None) -> bool:
            code, out, _ = await datalayer("list", *target, *mtls, *auth, env=env)
            return code == 0 and len(table_lines(out)) == 3

        await eventually(lambda: listed("--token-file", str(token_file)), timeout=10)
        assert await listed(env={"DATALAYER_TOKEN": TOKEN})

        code, _, err = await datalayer("list", *target, "--token-file", str(token_file))
        assert code == 1
        assert err.startswith("error: cannot reach the data layer"), err  # plaintext to TLS


class Screen(io.StringIO):
    """What a terminal would receive; `frame()` is the last complete table drawn."""

    def frame(self) -> str:
        text = ANSI.sub("", self.getvalue())
        frames = text.split("datalayer watch ")
        return frames[-1] if len(frames) > 1 else ""


async def test_watch_redraws_in_place_as_load_and_health_change(stack: Stack) -> None:
    screen = Screen()
    console = Console(file=screen, force_terminal=True, width=200, color_system="standard")
    view = WatchView(stack.client, console, refresh=0.2)
    task = asyncio.create_task(view.run())
    try:

        async def shows(name: str, *words: str) -> bool:
            line = table_lines(screen.frame()).get(name, "")
            return all(word in line.split() for word in words)

        await eventually(lambda: shows("pod-c", "0", "fresh"), timeout=10, what="pod-c fresh")
        await stack.control(2, {"waiting": 9, "running": 4})
        await eventually(lambda: shows("pod-c", "9", "4", "fresh"), what="pod-c waiting 9")
        await stack.control(0, {"fault": "http500"})
        await eventually(lambda: shows("pod-a", "stale", "500"), what="pod-a stale")
        frame = screen.frame()
        assert "1 stale, 0 degraded, 2 fresh" in frame
        assert list(table_lines(frame)) == ["pod-a", "pod-b", "pod-c"]  # worst first
        # Drawn in place: the cursor goes back up over the previous frame each time.
        assert re.search(r"\x1b\[\d*A", screen.getvalue())
        assert "\x1b[31m" in screen.getvalue() or "\x1b[1;31m" in screen.getvalue()  # red
        await stack.control(0, {"fault": None})
        await eventually(lambda: shows("pod-a", "fresh"), what="pod-a fresh again")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert view.frames >= 5


async def test_watch_shows_a_lost_server_and_keeps_the_last_state(tmp_path: Path) -> None:
    screen = Screen()
    console = Console(file=screen, force_terminal=True, width=200)
    async with running_stack(tmp_path) as stack:
        view = WatchView(stack.client, console, refresh=0.1, timeout=1)
        task = asyncio.create_task(view.run(duration=30))
        await eventually(lambda: _has(screen, "3 endpoints"), timeout=10)
        await stack.app.stop()
        await eventually(lambda: _has(screen, "cannot reach the data layer"), timeout=10)
        assert len(table_lines(screen.frame())) == 3
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _has(screen: Screen, text: str) -> bool:
    return text in screen.frame()


async def test_watch_once_and_duration_from_the_command_line(stack: Stack) -> None:
    await settle(stack)
    code, out, err = await datalayer("watch", "--once", *server(stack))
    assert code == 0, err
    assert "3 endpoints: 1 stale, 0 degraded, 2 fresh" in out
    assert list(table_lines(out)) == ["pod-a", "pod-b", "pod-c"]

    # Under a pseudo-terminal: rich redraws in place and `--duration` ends it with exit 0.
    master, slave = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        DATALAYER,
        "watch",
        "--duration",
        "1.5",
        "--refresh",
        "0.2",
        *server(stack),
        stdout=slave,
        stderr=slave,
        env={**os.environ, "COLUMNS": "160", "LINES": "40", "TERM": "xterm-256color"},
    )
    os.close(slave)
    output = await asyncio.to_thread(_read_all, master)
    assert await asyncio.wait_for(process.wait(), 10) == 0
    text = output.decode(errors="replace")
    assert text.count("datalayer watch") >= 3, text[-2000:]
    assert re.search(r"\x1b\[\d*A", text), "not redrawn in place"
    assert list(table_lines(ANSI.sub("", text).split("datalayer watch")[-1])) == [
        "pod-a",
        "pod-b",
        "pod-c",
    ]


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def test_rows_classify_health_and_format_for_people() -> None:
    assert health_state(stale=True, last_error="x") == "stale"
    assert health_state(stale=False, last_error="core: no waiting metric") == "degraded"
    assert health_state(stale=False, last_error="") == "fresh"
    assert [format_age(a) for a in (None, 0.04, 12.4, 185, 7300)] == [
        "never",
        "0.0s",
        "12s",
        "3m05s",
        "2h01m",
    ]
    row = EndpointRow("p", "", "a:1", "vllm", 0, 0, 0.0, (), (), 0, None, "fresh", "", 1)
    assert format_lora(row) == "-"


def test_unknown_values_show_as_a_dash_never_as_zero() -> None:
    """A field absent on the wire (not read) is `-`; a present 0 is `0`. Both used to be 0."""
    from console.render import endpoint_detail, endpoints_table
    from console.rows import format_kv, sort_rows
    from datalayer.v1 import datalayer_pb2 as pb

    unread = pb.Endpoint(name="pod-unread", address="10.0.0.1", port=8000, stale=True)
    idle = pb.Endpoint(
        name="pod-idle",
        address="10.0.0.2",
        port=8000,
        metrics=pb.Metrics(
            waiting_queue_size=0, running_requests_size=0, kv_cache_usage_percent=0.0,
            max_active_models=0,
        ),
    )  # fmt: skip
    busy = pb.Endpoint(
        name="pod-busy",
        metrics=pb.Metrics(waiting_queue_size=5, kv_cache_usage_percent=0.5, max_active_models=0),
    )
    rows = [EndpointRow.from_proto(e, 0.0) for e in (unread, idle, busy)]
    assert (rows[0].waiting, rows[0].running, rows[0].kv, rows[0].max_active_models) == (
        None,
        None,
        None,
        None,
    )
    assert (rows[1].waiting, rows[1].kv) == (0, 0.0)
    assert format_kv(None) == "-"
    assert format_kv(0.0) == "0%"
    assert format_lora(rows[0]) == "-"
    console = Console(width=160, file=io.StringIO(), color_system=None)
    console.print(endpoints_table(rows))
    lines = table_lines(console.file.getvalue())  # type: ignore[attr-defined]
    assert lines["pod-unread"].split()[1:5] == ["-", "-", "-", "-"]  # engine, waiting, running, kv
    assert lines["pod-idle"].split()[2:5] == ["0", "0", "0%"]
    # Column sorts look for the busiest pods: unknown values come after every known one.
    assert [r.name for r in sort_rows(rows, "waiting")] == ["pod-busy", "pod-idle", "pod-unread"]
    assert [r.name for r in sort_rows(rows, "kv")] == ["pod-busy", "pod-idle", "pod-unread"]
    detail = Console(width=120, file=io.StringIO(), color_system=None)
    detail.print(endpoint_detail(unread, rows[0]))
    text = detail.file.getvalue()  # type: ignore[attr-defined]
    assert re.search(r"^waiting\s+-\s*$", text, re.M), text
    assert re.search(r"^kv cache\s+-\s*$", text, re.M), text
    assert re.search(r"^kv blocks\s+- x - tokens\s*$", text, re.M), text


async def test_list_and_json_show_an_unread_endpoint_as_unknown(tmp_path: Path) -> None:
    """A discovered endpoint nobody answers on: `-` in the table, no field in --json."""
    async with running_stack(tmp_path) as stack:
        stack.write_endpoints()
        document = yaml.safe_load(stack.endpoints_file.read_text())
        labels = {"app": "vllm", "llm-d.ai/engine-type": "vllm"}
        document["endpoints"].append(
            {"name": "pod-never", "address": "127.0.0.1", "port": free_port(), "labels": labels}
        )
        stack.endpoints_file.write_text(yaml.safe_dump(document))
        await stack.control(2, {"waiting": 0, "running": 0, "kv_cache_usage": 0.0})

        async def seen() -> bool:
            by_name = {e.name: e for e in (await stack.client.list_endpoints()).endpoints}
            return "pod-never" in by_name and not by_name["pod-c"].stale

        await eventually(seen, timeout=10, what="pod-never listed and pod-c fresh")
        code, out, err = await datalayer("list", *server(stack))
        assert code == 0, err
        rows = table_lines(out)
        assert rows["pod-never"].split()[1:6] == ["vllm", "-", "-", "-", "-"]
        assert rows["pod-c"].split()[2:5] == ["0", "0", "0%"]
        code, out, err = await datalayer("get", "pod-never", *server(stack), "--json")
        assert code == 0, err
        metrics = json.loads(out).get("metrics", {})
        assert "waiting_queue_size" not in metrics
        assert "kv_cache_usage_percent" not in metrics
        code, out, err = await datalayer("get", "pod-c", *server(stack), "--json")
        assert json.loads(out)["metrics"]["waiting_queue_size"] == 0  # a present 0 is printed
