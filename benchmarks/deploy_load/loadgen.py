"""An open-loop HTTP load generator: requests leave on a fixed schedule, whatever came before.

A closed loop (send, wait for the answer, send the next) slows down exactly when the server
stalls, so a stall shows up as "fewer requests" instead of as latency (coordinated omission).
Here request i is due at start + i/rate and is sent then even if earlier ones still hang;
its latency is measured from when it was *due*, so any lag of this generator counts against
the server, never in its favour. The lag itself is recorded so a slow client can be spotted.

Each request uses a fresh TCP connection (`Connection: close`): that exercises Caddy's
listener on every request, which is what a config reload could disturb. `--keepalive`
instead reuses idle connections, the way browsers do, where a reload that closes idle
connections can race with a request sent on one of them.
"""

from __future__ import annotations

import asyncio
import errno
import re
import time
from dataclasses import dataclass

PATHS = ("/api/version", "/")
# /api/version answers {"version": "..."}; the page shows "choiros <version>" in its HTML.
_VERSION_RE = (re.compile(rb'"version":\s*"([^"]+)"'), re.compile(rb"choiros ([A-Za-z0-9._+-]+)"))


@dataclass(slots=True)
class Sample:
    index: int
    path: str
    due: float  # perf_counter seconds when the schedule said to send it
    sent: float = 0.0  # when the request actually started (due + generator lag)
    done: float = 0.0  # when the full answer (or the error) arrived
    status: int = 0
    version: str | None = None
    error: str | None = None  # kind of failure: timeout, refused, reset, eof, status-502, ...
    reused: bool = False  # sent on a kept-alive connection

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def latency(self) -> float:
        return self.done - self.due


def parse_version(path: str, body: bytes) -> str | None:
    match = _VERSION_RE[0 if path.startswith("/api/") else 1].search(body)
    return match.group(1).decode() if match else None


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return "eof"  # the connection closed before a complete answer
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno)).lower()
    return type(exc).__name__


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


class LoadGenerator:
    def __init__(
        self, address: str, port: int = 80, *, rate: float, timeout: float = 15.0, keepalive: bool = False
    ) -> None:
        self.address, self.port = address, port
        self.rate, self.timeout, self.keepalive = rate, timeout, keepalive
        self.samples: list[Sample] = []
        self._idle: list[_Conn] = []
        self.start = 0.0

    async def run(self, stop: asyncio.Event) -> list[Sample]:
        """Send on schedule until `stop` is set; then wait for the stragglers."""
        self.start = time.perf_counter()
        tasks: set[asyncio.Task[None]] = set()
        i = 0
        while not stop.is_set():
            due = self.start + i / self.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # at most 1/rate, so `stop` is seen promptly
            sample = Sample(i, PATHS[i % len(PATHS)], due)
            self.samples.append(sample)
            task = asyncio.create_task(self._one(sample))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.wait(tasks)
        for conn in self._idle:
            conn.close()
        return self.samples

    async def _connect(self) -> tuple[_Conn, bool]:
        while self.keepalive and self._idle:
            conn = self._idle.pop()
            if not conn.reader.at_eof():
                return conn, True
            conn.close()
        reader, writer = await asyncio.open_connection(self.address, self.port)
        return _Conn(reader, writer), False

    async def _one(self, s: Sample) -> None:
        s.sent = time.perf_counter()
        conn: _Conn | None = None
        try:
            async with asyncio.timeout(self.timeout):
                conn, s.reused = await self._connect()
                body, keep = await self._exchange(conn, s)
            s.version = parse_version(s.path, body)
            if s.status != 200:
                s.error = f"status-{s.status}"
            if keep:
                self._idle.append(conn)
                conn = None
        except (OSError, TimeoutError, asyncio.IncompleteReadError, EOFError, ValueError) as exc:
            s.error = _error_kind(exc)
            if s.reused and s.error in ("eof", "reset"):
                s.error = f"{s.error} (kept-alive connection)"
        finally:
            s.done = time.perf_counter()
            if conn is not None:
                conn.close()

    async def _exchange(self, conn: _Conn, s: Sample) -> tuple[bytes, bool]:
        """One GET; returns the body and whether the connection may be reused."""
        connection = "keep-alive" if self.keepalive else "close"
        conn.writer.write(
            f"GET {s.path} HTTP/1.1\r\nHost: {self.address}\r\nUser-Agent: deploy-load\r\n"
            f"Connection: {connection}\r\n\r\n".encode()
        )
        await conn.writer.drain()
        head = await conn.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        s.status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if "content-length" in headers:
            body = await conn.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(conn.reader)
        else:
            return await conn.reader.read(), False  # delimited by the close
        return body, self.keepalive and headers.get("connection", "").lower() != "close"


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers are sent by Caddy here
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
