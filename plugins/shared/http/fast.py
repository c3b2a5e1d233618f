"""`KeepAliveClient`: GET a body over kept-alive HTTP/1.1 connections, strictly.

What it does, and nothing more:

- one `asyncio.Protocol` per TCP connection, its bytes parsed by llhttp (the
  parser of Node.js and uvicorn, through `httptools`): Content-Length and
  chunked bodies, bodies read to EOF, keep-alive as the server allows;
- idle connections are kept per (host, port) and reused; one that the server
  closed while idle is noticed and replaced, and a request that finds its
  reused connection closed before any byte of a reply is retried once on a
  new connection (GET is idempotent), so a server's idle timeout never shows
  as a failed scrape;
- anything but `200` is an error naming the status; a body over `max_bytes`
  is an error as soon as it is known (from Content-Length, or while reading),
  and its connection is closed rather than drained;
- a cancelled or failed request closes its connection: a reply still in
  flight can never be read as the next request's;
- an optional total timeout per request (connect included); the collector
  puts its own poll timeout around it in any case;
- `Content-Encoding: gzip`/`deflate` is decoded (the request asks for
  `identity`, so servers should not send it), under the same size cap.

The request bytes for each target are built once. Per request the client
allocates a future, the body chunks and the body; nothing per header beyond
what llhttp hands over.

>>> async def scrape(port: int) -> bytes:  # doctest: +SKIP
...     client = KeepAliveClient("/metrics", accept="text/plain")
...     try:
...         return await client.get("127.0.0.1", port, max_bytes=1 << 20)
...     finally:
...         await client.close()
"""

from __future__ import annotations

import asyncio
import functools
import zlib
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar, cast

from datalayer.model import host_port
from plugins.shared.http.aio import PollError

try:
    import httptools
except ImportError:  # pragma: no cover - a dependency; absent only in a broken install
    httptools = None  # type: ignore[assignment]

#: Whether this client can be used (httptools is installed).
AVAILABLE: Final = httptools is not None

USER_AGENT: Final = "datalayer"
_T = TypeVar("_T")


class ConnectError(PollError):
    """The TCP connection could not be opened."""


class ServerDisconnected(PollError):
    """The server closed the connection before a complete reply's headers."""


class PayloadError(PollError):
    """The server closed the connection before the whole body (as Content-Length said)."""


class _Stale(Exception):
    """A reused connection closed before any byte of the reply: safe to retry."""


class _Connection(asyncio.Protocol):
    """One TCP connection and the state of the request in flight on it (at most one).

    The llhttp parser lives only while a request is in flight (creating one costs
    ~0.4 µs; keeping one per idle connection ~850 bytes).
    """

    __slots__ = (
        "chunks",
        "encoding",
        "framed",
        "headers_done",
        "idle_since",
        "keep_alive",
        "length",
        "limit",
        "loop",
        "open",
        "parser",
        "reason",
        "received",
        "reused",
        "size",
        "transport",
        "waiter",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = None
        #: False once the connection is closed, failed, or not reusable.
        self.open = True
        #: The server allows another request on this connection after the last reply.
        self.keep_alive = False
        self.reused = False
        self.idle_since = 0.0
        self.waiter: asyncio.Future[bytes] | None = None
        self.limit = 0
        self.chunks: list[bytes] = []
        self.size = 0
        self.reason = b""
        self.length = -1
        self.framed = False
        self.encoding = b""
        self.headers_done = False
        self.received = False

    # --- driving one request ---

    def send(self, request: bytes, limit: int) -> asyncio.Future[bytes]:
        self.parser = httptools.HttpResponseParser(self)
        self.waiter = waiter = self.loop.create_future()
        self.limit = limit
        self.chunks = []
        self.size = 0
        self.reason = b""
        self.length = -1
        self.framed = False
        self.encoding = b""
        self.headers_done = False
        self.received = False
        assert self.transport is not None
        self.transport.write(request)
        return waiter

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once (a reply may still be in flight)."""
        self.open = False
        self.waiter = None
        self.parser = None
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: BaseException) -> None:
        waiter = self.waiter
        self.waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def _finish(self) -> None:
        waiter = self.waiter
        self.waiter = None
        self.parser = None  # (it holds bound methods of this connection: a cycle)
        if waiter is None or waiter.done():
            return
        chunks = self.chunks
        self.chunks = []
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if self.encoding and self.encoding != b"identity":
            try:
                body = _decode(body, self.encoding, self.limit)
            except PollError as exc:
                waiter.set_exception(exc)
                self.abort()
                return
        waiter.set_result(body)

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if self.waiter is None or parser is None:
            # Bytes nobody asked for (or after a failure): the stream cannot be trusted.
            self.abort()
            return
        self.received = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(PollError(f"invalid HTTP response: {exc}"))

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        waiter = self.waiter
        if waiter is None or waiter.done():
            self.parser = None
            return
        if self.headers_done and not self.framed:
            self._finish()  # a body delimited by the end of the connection
            return
        self.waiter = None
        self.parser = None
        if not self.received and self.reused:
            waiter.set_exception(_Stale())
        elif exc is not None:
            waiter.set_exception(exc)
        elif not self.headers_done:
            waiter.set_exception(
                ServerDisconnected(
                    "server closed the connection before the reply"
                    if not self.received
                    else "server closed the connection inside the reply's headers"
                )
            )
        else:
            expected = f" of {self.length}" if self.length >= 0 else ""
            waiter.set_exception(
                PayloadError(
                    f"response payload is not completed: the connection closed after "
                    f"{self.size}{expected} body bytes"
                )
            )

    # --- httptools callbacks ---

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self.framed = True
            try:
                self.length = int(value)
            except ValueError:
                self.length = -1  # llhttp rejects the message itself
        elif name == b"transfer-encoding":
            self.framed = True  # llhttp decodes chunked (and rejects what it cannot frame)
        elif name == b"content-encoding":
            self.encoding = value.strip().lower()

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            # An informational reply; the real one follows on the same connection.
            self.reason = b""
            self.length = -1
            self.framed = False
            self.encoding = b""
            return
        self.headers_done = True
        if status != 200:
            reason = self.reason.decode("latin-1").strip()
            self._fail(PollError(f"HTTP {status} {reason}".rstrip()))
        elif self.length > self.limit:
            self._fail(
                PollError(f"body of {self.length} bytes exceeds the {self.limit}-byte limit")
            )

    def on_body(self, body: bytes) -> None:
        if self.waiter is None:
            return
        self.size += len(body)
        if self.size > self.limit:
            self._fail(PollError(f"body exceeds the {self.limit}-byte limit"))
            return
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if not self.headers_done or self.parser is None:
            return  # the end of an informational reply (or of a failed one)
        self.keep_alive = self.parser.should_keep_alive()
        self._finish()


def _decode(body: bytes, encoding: bytes, limit: int) -> bytes:
    if encoding in (b"gzip", b"x-gzip", b"deflate"):
        inflater = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise PollError(f"invalid {encoding.decode()} body: {exc}") from None
        if len(out) > limit:
            raise PollError(f"body exceeds the {limit}-byte limit")
        return out
    raise PollError(f"unsupported Content-Encoding {encoding.decode('latin-1')!r}")


class _Target:
    """One (host, port): its request bytes and its idle connections."""

    __slots__ = ("host", "idle", "last_used", "port", "request")

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.host = host
        self.port = port
        self.request = request
        self.idle: list[_Connection] = []
        self.last_used = 0.0


class KeepAliveClient:
    """GETs of one path on many (host, port) targets, over kept-alive connections.

    Must be created inside the running event loop. One client per source
    instance: nothing is shared between clients.

    Idle connections are closed after `keepalive_timeout` (default 4 s: below
    uvicorn's 5 s, vLLM's server, so this side closes first and a request never
    races the server's close). A 50 ms scrape keeps its connection for good; a
    pod scraped every 10 s costs no socket between scrapes.
    """

    def __init__(
        self,
        path: str,
        *,
        accept: str,
        timeout: float | None = None,
        keepalive_timeout: float = 4.0,
        max_idle_per_target: int = 2,
    ) -> None:
        if not AVAILABLE:
            raise RuntimeError("httptools is not installed (a dependency of this package)")
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        self._loop = asyncio.get_running_loop()
        self._path = path
        self._accept = accept
        self._timeout = timeout
        self._keepalive = keepalive_timeout
        self._max_idle = max_idle_per_target
        self._targets: dict[tuple[str, int], _Target] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def get(self, host: str, port: int, max_bytes: int) -> bytes:
        """The body of a 200 reply to `GET path` on `host:port`; PollError (or OSError,
        TimeoutError) otherwise."""
        if self._timeout is None:
            return await self._get(host, port, max_bytes)
        async with asyncio.timeout(self._timeout):
            return await self._get(host, port, max_bytes)

    async def _get(self, host: str, port: int, max_bytes: int) -> bytes:
        if self._closed:
            raise RuntimeError("client closed")
        target = self._targets.get((host, port))
        if target is None:
            target = self._target(host, port)
        idle = target.idle
        while idle:
            conn = idle.pop()
            if not conn.open:
                continue
            conn.reused = True
            try:
                return await self._exchange(target, conn, max_bytes)
            except _Stale:
                break  # the server closed it meanwhile: once more on a new connection
        conn = await self._connect(target)
        try:
            return await self._exchange(target, conn, max_bytes)
        except _Stale:  # pragma: no cover - a new connection is never `reused`
            raise ServerDisconnected("server closed the connection before the reply") from None

    async def _exchange(self, target: _Target, conn: _Connection, max_bytes: int) -> bytes:
        try:
            body = await conn.send(target.request, max_bytes)
        except BaseException:
            conn.abort()
            raise
        self._release(target, conn)
        return body

    def _release(self, target: _Target, conn: _Connection) -> None:
        """After a complete reply: keep the connection for the next request, or close it."""
        if conn.keep_alive and conn.open and not self._closed:
            idle = target.idle
            if len(idle) < self._max_idle:
                now = self._loop.time()
                conn.idle_since = target.last_used = now
                idle.append(conn)
                if self._sweeper is None:
                    self._sweeper = self._loop.call_later(self._keepalive / 2, self._sweep)
                return
        conn.close()

    def start_get(
        self, host: str, port: int, max_bytes: int, decode: Callable[[bytes], _T]
    ) -> asyncio.Future[_T]:
        """`decode(await get(...))` as a future, without a task in the common case.

        With a kept-alive connection idle for the target (every scrape but the first),
        the request is written at once and the reply finishes the future from the
        protocol's callbacks. Otherwise (a connect, a retry after a stale connection, a
        client timeout) it runs `get` in a task. Cancelling the future aborts the request
        and its connection, as cancelling `get` does.
        """
        out: asyncio.Future[_T] = self._loop.create_future()
        conn = None
        target = self._targets.get((host, port))
        if target is not None and self._timeout is None and not self._closed:
            idle = target.idle
            while idle:
                candidate = idle.pop()
                if candidate.open:
                    conn = candidate
                    break
        if conn is None or target is None:
            self._via_task(out, self.get(host, port, max_bytes), decode)
            return out
        conn.reused = True
        waiter = conn.send(target.request, max_bytes)
        waiter.add_done_callback(
            functools.partial(self._replied, out, target, conn, decode, max_bytes)
        )
        out.add_done_callback(functools.partial(_abort_unless_done, conn, waiter))
        return out

    def _replied(
        self,
        out: asyncio.Future[_T],
        target: _Target,
        conn: _Connection,
        decode: Callable[[bytes], _T],
        max_bytes: int,
        waiter: asyncio.Future[bytes],
    ) -> None:
        if out.done():  # cancelled meanwhile: the connection was aborted then
            if not waiter.cancelled():
                waiter.exception()
            return
        exc = None if waiter.cancelled() else waiter.exception()
        if waiter.cancelled() or isinstance(exc, _Stale):
            # The server closed the idle connection meanwhile: once more on a new one.
            conn.abort()
            self._via_task(out, self._get(target.host, target.port, max_bytes), decode)
            return
        if exc is not None:
            conn.abort()
            out.set_exception(exc)
            return
        self._release(target, conn)
        _settle(out, decode, waiter.result())

    def _via_task(
        self,
        out: asyncio.Future[_T],
        coro: Coroutine[Any, Any, bytes],
        decode: Callable[[bytes], _T],
    ) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(functools.partial(_settle_from, out, decode))
        out.add_done_callback(functools.partial(_cancel_unless_done, task))

    def _target(self, host: str, port: int) -> _Target:
        authority = host_port(host, port)
        request = (
            f"GET {self._path} HTTP/1.1\r\n"
            f"Host: {authority}\r\n"
            f"User-Agent: {USER_AGENT}\r\n"
            f"Accept: {self._accept}\r\n"
            "Accept-Encoding: identity\r\n"
            "\r\n"
        ).encode("latin-1")
        target = self._targets[(host, port)] = _Target(host, port, request)
        return target

    async def _connect(self, target: _Target) -> _Connection:
        loop = self._loop
        try:
            _, conn = await loop.create_connection(
                lambda: _Connection(loop), target.host, target.port
            )
        except OSError as exc:
            raise ConnectError(f"cannot connect to {target.host}:{target.port}: {exc}") from exc
        return conn

    def _sweep(self) -> None:
        """Close connections idle past the keep-alive timeout; forget unused targets."""
        self._sweeper = None
        deadline = self._loop.time() - self._keepalive
        for key, target in list(self._targets.items()):
            keep = []
            for conn in target.idle:
                if conn.open and conn.idle_since > deadline:
                    keep.append(conn)
                else:
                    conn.close()
            target.idle = keep
            if not keep and target.last_used <= deadline:
                del self._targets[key]
        if any(target.idle for target in self._targets.values()):
            self._sweeper = self._loop.call_later(self._keepalive / 2, self._sweep)

    def idle_connections(self) -> int:
        return sum(len(target.idle) for target in self._targets.values())

    async def close(self) -> None:
        """Close every idle connection (requests in flight close their own when they end)."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for target in self._targets.values():
            for conn in target.idle:
                conn.close()
            target.idle = []
        self._targets.clear()
        await asyncio.sleep(0)  # let the transports deliver connection_lost


def _settle(out: asyncio.Future[_T], decode: Callable[[bytes], _T], body: bytes) -> None:
    try:
        out.set_result(decode(body))
    except Exception as exc:
        out.set_exception(exc)


def _settle_from(
    out: asyncio.Future[_T], decode: Callable[[bytes], _T], task: asyncio.Future[bytes]
) -> None:
    if out.done():
        if not task.cancelled():
            task.exception()
        return
    if task.cancelled():
        out.cancel()
    elif (exc := task.exception()) is not None:
        out.set_exception(exc)
    else:
        _settle(out, decode, task.result())


def _cancel_unless_done(task: asyncio.Future[bytes], out: asyncio.Future[Any]) -> None:
    if out.cancelled() and not task.done():
        task.cancel()


def _abort_unless_done(
    conn: _Connection, waiter: asyncio.Future[bytes], out: asyncio.Future[Any]
) -> None:
    """A cancelled request drops its connection: its reply can never be read as the next's."""
    if out.cancelled() and not waiter.done():
        conn.abort()
