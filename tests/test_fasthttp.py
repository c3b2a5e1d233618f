"""plugins/shared/http against real sockets, side by side with aiohttp (`plugins/httpfetch`).

Every scenario runs on the default asyncio loop and on uvloop (whose transports are not
asyncio classes), and most run the aiohttp fetch too, so the two clients are held to the same
behaviour: the same body, or the same kind of error with the same words.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import uvloop

from plugins.shared.http import ConnectError, KeepAliveClient, PayloadError, ServerDisconnected
from plugins.shared.http.aio import PollError, fetch_body, new_session

BODY = b"# TYPE m gauge\nm 1\n" * 200
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run(loop_kind: str, main: Callable[[], Awaitable[Any]]) -> Any:
    with asyncio.Runner(loop_factory=LOOPS[loop_kind]) as runner:
        return runner.run(main())


@pytest.fixture(params=list(LOOPS))
def loop_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- a scripted raw HTTP server ---------------------------------------------------------------


Reply = bytes | Callable[[asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    """Answers each request with the next scripted reply; counts connections and requests."""

    replies: list[Reply]
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        # Python 3.11's wait_closed does not wait for handlers; they end with their sockets.

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
                if isinstance(reply, bytes):
                    writer.write(reply)
                    await writer.drain()
                else:
                    await reply(writer)
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


def chunked(body: bytes = BODY, size: int = 1000) -> bytes:
    out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    for i in range(0, len(body), size):
        piece = body[i : i + size]
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return out + b"0\r\n\r\n"


def close_after(data: bytes) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    async def reply(writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        writer.close()

    return reply


async def hang(writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(3600)


# --- the two clients ---------------------------------------------------------------------------


async def fast_get(port: int, max_bytes: int = 1 << 20, **kwargs: Any) -> bytes:
    client = KeepAliveClient("/metrics", accept="text/plain", **kwargs)
    try:
        return await client.get("127.0.0.1", port, max_bytes)
    finally:
        await client.close()


async def aiohttp_get(port: int, max_bytes: int = 1 << 20, timeout: float | None = None) -> bytes:
    session = new_session("text/plain", timeout)
    try:
        return await fetch_body(session, f"http://127.0.0.1:{port}/metrics", max_bytes)
    finally:
        await session.close()


CLIENTS = {"fasthttp": fast_get, "aiohttp": aiohttp_get}


def both(loop_kind: str, replies: list[Reply], **kwargs: Any) -> dict[str, Any]:
    """Each client's result (the body, or the exception) against a fresh server."""

    async def main() -> dict[str, Any]:
        results: dict[str, Any] = {}
        for name, get in CLIENTS.items():
            server = await RawServer(list(replies)).start()
            try:
                results[name] = await get(server.port, **kwargs)
            except Exception as exc:
                results[name] = exc
            finally:
                await server.close()
        return results

    return dict(run(loop_kind, main))


# --- bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        ok(),
        chunked(),
        # No framing at all: the body ends with the connection (HTTP/1.0 style).
        close_after(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + BODY),
        ok(b""),
    ],
    ids=["content-length", "chunked", "until-eof", "empty"],
)
def test_bodies_match_aiohttp(loop_kind: str, reply: Reply) -> None:
    results = both(loop_kind, [reply])
    assert results["fasthttp"] == results["aiohttp"]
    assert isinstance(results["fasthttp"], bytes)


def test_gzip_is_decoded_like_aiohttp(loop_kind: str) -> None:
    results = both(loop_kind, [ok(gzip.compress(BODY), b"Content-Encoding: gzip\r\n")])
    assert results["fasthttp"] == results["aiohttp"] == BODY


def test_request_is_a_plain_keep_alive_get(loop_kind: str) -> None:
    async def main() -> bytes:
        server = await RawServer([ok()]).start()
        try:
            await fast_get(server.port)
        finally:
            await server.close()
        return server.requests[0]

    head = run(loop_kind, main)
    assert head.startswith(b"GET /metrics HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in head
    assert b"\r\nAccept: text/plain\r\n" in head
    assert b"\r\nAccept-Encoding: identity\r\n" in head
    assert b"Connection: close" not in head


# --- errors, named like aiohttp's ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom",
            "HTTP 500 Internal Server Error",
        ),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "HTTP 404 Not Found"),
        (ok(b"x" * 2000), "body of 2000 bytes exceeds the 1000-byte limit"),
        (chunked(b"x" * 2000, 100), "body exceeds the 1000-byte limit"),
    ],
    ids=["500", "404", "content-length-over-cap", "chunked-over-cap"],
)
def test_status_and_size_errors_match_aiohttp(loop_kind: str, reply: bytes, message: str) -> None:
    results = both(loop_kind, [reply], max_bytes=1000)
    for name, result in results.items():
        assert isinstance(result, PollError), (name, result)
        assert str(result) == message, name


def test_truncated_body_is_a_payload_error_like_aiohttp(loop_kind: str) -> None:
    truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"x" * 1000
    results = both(loop_kind, [close_after(truncated)])
    assert isinstance(results["aiohttp"], aiohttp.ClientPayloadError)
    assert isinstance(results["fasthttp"], PayloadError)
    for result in results.values():
        assert "payload is not completed" in str(result)
    assert "after 1000 of 5000 body bytes" in str(results["fasthttp"])


def test_connection_closed_before_reply(loop_kind: str) -> None:
    results = both(loop_kind, [close_after(b"")])
    assert isinstance(results["aiohttp"], aiohttp.ServerDisconnectedError)
    assert isinstance(results["fasthttp"], ServerDisconnected)


def test_invalid_http_is_an_error(loop_kind: str) -> None:
    results = both(loop_kind, [close_after(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")])
    assert isinstance(results["aiohttp"], aiohttp.ClientResponseError)
    assert isinstance(results["fasthttp"], PollError)
    assert "invalid HTTP response" in str(results["fasthttp"])


def test_connection_refused(loop_kind: str) -> None:
    async def main() -> None:
        server = await RawServer([ok()]).start()
        port = server.port
        await server.close()
        await asyncio.sleep(0.01)
        with pytest.raises(ConnectError, match=f"cannot connect to 127.0.0.1:{port}"):
            await fast_get(port)
        with pytest.raises(aiohttp.ClientConnectorError):
            await aiohttp_get(port)

    run(loop_kind, main)


def test_timeout_covers_a_reply_that_never_comes(loop_kind: str) -> None:
    results = both(loop_kind, [hang], timeout=0.1)
    for name, result in results.items():
        assert isinstance(result, TimeoutError), (name, result)


# --- connections -----------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(loop_kind: str) -> None:
    async def main() -> tuple[int, int]:
        server = await RawServer([ok()]).start()
        client = KeepAliveClient("/metrics", accept="text/plain")
        try:
            for _ in range(5):
                assert await client.get("127.0.0.1", server.port, 1 << 20) == BODY
            idle = client.idle_connections()
        finally:
            await client.close()
            await server.close()
        return server.connections, idle

    assert run(loop_kind, main) == (1, 1)


def test_connection_close_header_is_honoured(loop_kind: str) -> None:
    async def main() -> int:
        server = await RawServer([ok(extra=b"Connection: close\r\n")]).start()
        client = KeepAliveClient("/metrics", accept="text/plain")
        try:
            for _ in range(3):
                assert await client.get("127.0.0.1", server.port, 1 << 20) == BODY
            assert client.idle_connections() == 0
        finally:
            await client.close()
            await server.close()
        return server.connections

    assert run(loop_kind, main) == 3


def test_reconnects_after_the_server_closed_an_idle_connection(loop_kind: str) -> None:
    """The server answers, then closes (its idle timeout): the next GET opens a new one."""

    async def main() -> int:
        server = await RawServer([close_after(ok())]).start()
        client = KeepAliveClient("/metrics", accept="text/plain")
        try:
            for _ in range(3):
                assert await client.get("127.0.0.1", server.port, 1 << 20) == BODY
                await asyncio.sleep(0.02)  # the close arrives while idle
        finally:
            await client.close()
            await server.close()
        return server.connections

    assert run(loop_kind, main) == 3


def test_a_stale_connection_is_retried_once(loop_kind: str) -> None:
    """The server closes a kept-alive connection just as the next request arrives (no reply):
    GET is idempotent, so the client retries on a new connection instead of failing."""

    async def main() -> tuple[int, int]:
        server = await RawServer([ok(), close_after(b""), ok()]).start()
        client = KeepAliveClient("/metrics", accept="text/plain")
        try:
            assert await client.get("127.0.0.1", server.port, 1 << 20) == BODY
            assert await client.get("127.0.0.1", server.port, 1 << 20) == BODY
        finally:
            await client.close()
            await server.close()
        return server.connections, len(server.requests)

    assert run(loop_kind, main) == (2, 3)


def test_a_fresh_connection_closed_before_reply_is_not_retried(loop_kind: str) -> None:
    async def main() -> int:
        server = await RawServer([close_after(b"")]).start()
        try:
            with pytest.raises(ServerDisconnected):
                await fast_get(server.port)
        finally:
            await server.close()
        return len(server.requests)

    assert run(loop_kind, main) == 1


def test_a_cancelled_request_never_leaves_its_reply_for_the_next(loop_kind: str) -> None:
    """The first reply comes late; the request is cancelled meanwhile. The next request must
    get its own reply on a new connection, never the late one."""

    async def late(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.2)
        writer.write(ok(b"late\n"))
        await writer.drain()
        await asyncio.sleep(1)

    async def main() -> tuple[bytes, int]:
        server = await RawServer([late, ok(b"fresh\n")]).start()
        client = KeepAliveClient("/metrics", accept="text/plain")
        try:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await client.get("127.0.0.1", server.port, 1 << 20)
            body = await client.get("127.0.0.1", server.port, 1 << 20)
        finally:
            await client.close()
            await server.close()
        return body, server.connections

    assert run(loop_kind, main) == (b"fresh\n", 2)


def test_errors_close_the_connection(loop_kind: str) -> None:
    """After a 500 or an oversized body the connection is not reused (never half-read)."""

    async def main() -> int:
        error = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom"
        server = await RawServer([error, ok(b"x" * 2000), ok(b"small\n")]).start()
        client = KeepAliveClient("/metrics", accept="text/plain")
        try:
            for message in ("HTTP 500", "exceeds the 1000-byte limit"):
                with pytest.raises(PollError, match=message):
                    await client.get("127.0.0.1", server.port, 1000)
            assert await client.get("127.0.0.1", server.port, 1000) == b"small\n"
        finally:
            await client.close()
            await server.close()
        return server.connections

    assert run(loop_kind, main) == 3


def test_idle_connections_expire(loop_kind: str) -> None:
    async def main() -> tuple[int, int]:
        server = await RawServer([ok()]).start()
        client = KeepAliveClient("/metrics", accept="text/plain", keepalive_timeout=0.1)
        try:
            await client.get("127.0.0.1", server.port, 1 << 20)
            before = client.idle_connections()
            await asyncio.sleep(0.3)
            after = client.idle_connections()
        finally:
            await client.close()
            await server.close()
        return before, after

    assert run(loop_kind, main) == (1, 0)


def test_path_must_be_absolute() -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="must start with '/'"):
            KeepAliveClient("metrics", accept="text/plain")

    run("asyncio", main)


# --- start_get: the collector's task-free path -----------------------------------------------


def test_start_get_on_a_kept_alive_connection_runs_no_task(loop_kind: str) -> None:
    """After the first scrape, a request is written at once and finished by the protocol's
    callbacks: no task exists while it is in flight. The decode runs on the body."""

    async def late(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.1)
        writer.write(ok())
        await writer.drain()
        await asyncio.sleep(1)

    async def main() -> tuple[int, int, int]:
        server = await RawServer([ok(), late]).start()
        client = KeepAliveClient("/metrics", accept="text/plain")
        try:
            first = client.start_get("127.0.0.1", server.port, 1 << 20, len)
            assert await first == len(BODY)  # a connect: this one ran in a task
            tasks_before = len(asyncio.all_tasks())
            second = client.start_get("127.0.0.1", server.port, 1 << 20, len)
            await asyncio.sleep(0.05)
            tasks_during = len(asyncio.all_tasks())
            assert await second == len(BODY)
        finally:
            await client.close()
            await server.close()
        return tasks_during - tasks_before, server.connections, len(server.requests)

    assert run(loop_kind, main) == (0, 1, 2)


def test_start_get_cancelled_drops_its_connection_and_decode_errors_fail_it(
    loop_kind: str,
) -> None:
    async def late(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.2)
        writer.write(ok(b"late\n"))
        await writer.drain()
        await asyncio.sleep(1)

    def refuse(body: bytes) -> bytes:
        raise ValueError(f"bad page of {len(body)} bytes")

    async def main() -> tuple[bytes, int]:
        server = await RawServer([ok(), late, ok(b"fresh\n"), ok(b"x")]).start()
        client = KeepAliveClient("/metrics", accept="text/plain")
        try:
            await client.start_get("127.0.0.1", server.port, 1 << 20, bytes)
            pending = client.start_get("127.0.0.1", server.port, 1 << 20, bytes)
            await asyncio.sleep(0.05)
            pending.cancel()  # the collector's timeout
            await asyncio.sleep(0)
            assert client.idle_connections() == 0
            body = await client.start_get("127.0.0.1", server.port, 1 << 20, bytes)
            with pytest.raises(ValueError, match="bad page of 1 bytes"):
                await client.start_get("127.0.0.1", server.port, 1 << 20, refuse)
        finally:
            await client.close()
            await server.close()
        return body, server.connections

    assert run(loop_kind, main) == (b"fresh\n", 2)


def test_start_get_retries_a_stale_connection_once(loop_kind: str) -> None:
    async def main() -> tuple[int, int]:
        server = await RawServer([ok(), close_after(b""), ok()]).start()
        client = KeepAliveClient("/metrics", accept="text/plain")
        try:
            assert await client.start_get("127.0.0.1", server.port, 1 << 20, bytes) == BODY
            assert await client.start_get("127.0.0.1", server.port, 1 << 20, bytes) == BODY
        finally:
            await client.close()
            await server.close()
        return server.connections, len(server.requests)

    assert run(loop_kind, main) == (2, 3)
