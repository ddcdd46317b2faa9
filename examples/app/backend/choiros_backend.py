"""choiros backend: a tiny JSON API on the Python standard library.

Runs on a bare Debian server with only ``python3`` (3.9+) installed.

* ``--port`` (required) and ``--host`` (default 127.0.0.1) choose where to listen.
* ``DATABASE_PATH`` (required) is the SQLite file; its parent directory and the
  ``notes`` table are created on start, the database is switched to WAL mode.
* ``CORS_ALLOW_ORIGINS`` is a comma-separated allow-list of origins (``*`` = any).
* The release version comes from the ``VERSION`` file at the release root (the
  directory that holds ``bin/``), found from this file's real path.
* A ``FAULT`` file at the release root (baked in at build time) injects a fault
  for tests: ``health-500``, ``crash``, ``slow-start``, ``chdir`` or ``notes-500`` (healthy,
  but ``/api/notes`` answers 500).
* ``/ws`` is a websocket (RFC 6455, on the standard library): it greets with the
  release version and echoes every text message with it, so a client sees which
  release answers.
* ``/-/versions.json`` answers in Datasette's shape (the version nested under the
  app's name), for health gates that must find it there.
* Every answer of the backend says which process answered: ``X-Choiros-Version`` and,
  under systemd, ``X-Choiros-Invocation`` (the unit's ``$INVOCATION_ID``, new at every
  start), so a client can tell one start of a release from the next.

SIGTERM and SIGINT stop accepting connections, close open websockets with 1001
("going away"), let in-flight requests finish, and exit 0.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import signal
import socket
import socketserver
import sqlite3
import struct
import sys
import threading
import time
import traceback
from contextlib import closing, suppress
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO
from urllib.parse import urlsplit

APP_NAME = "choiros"
PROG = "choiros-backend"
DEV_VERSION = "0.0.0-dev"

FAULT_HEALTH_500 = "health-500"
FAULT_CRASH = "crash"
FAULT_SLOW_START = "slow-start"
FAULT_CHDIR = "chdir"  # not a failure: a healthy app that changes its working directory
# Passes its health gate but is broken for users: /api/notes answers 500 (what a rollback by
# hand is for).
FAULT_NOTES_500 = "notes-500"
KNOWN_FAULTS = (FAULT_HEALTH_500, FAULT_CRASH, FAULT_SLOW_START, FAULT_CHDIR, FAULT_NOTES_500)
CRASH_AFTER_SECONDS = 1.0
SLOW_START_SECONDS = 3.0

MAX_BODY_BYTES = 64 * 1024
MAX_NOTE_CHARS = 10_000
CORS_ALLOW_METHODS = "GET, POST, OPTIONS"
CORS_ALLOW_HEADERS = "Content-Type"
CORS_MAX_AGE = "600"

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
WS_MAX_MESSAGE = 64 * 1024
WS_CLOSE_WAIT = 2.0  # seconds a peer gets to answer our close frame at shutdown
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


# --------------------------------------------------------------------------- release


def release_root() -> Path:
    """The release root: the parent of this module's directory, by real path."""
    return Path(os.path.realpath(__file__)).parent.parent


def read_version(root: Path) -> str:
    """The release version from ``ROOT/VERSION``; a dev marker when running from source."""
    try:
        text = (root / "VERSION").read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return DEV_VERSION
    return text or DEV_VERSION


def read_fault(root: Path) -> str | None:
    """The fault baked into this release (``ROOT/FAULT``), if any."""
    try:
        text = (root / "FAULT").read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def log(message: str) -> None:
    """One line to stderr (the systemd journal adds timestamps)."""
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


def sd_notify(state: str) -> None:
    """Tell systemd about our state when run as a ``Type=notify`` unit (no-op otherwise)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError:
        pass


# --------------------------------------------------------------------------- config


def parse_origins(raw: str | None) -> frozenset[str]:
    """Parse ``CORS_ALLOW_ORIGINS`` (comma-separated; trailing slashes ignored)."""
    if not raw:
        return frozenset()
    return frozenset(part.strip().rstrip("/") for part in raw.split(",") if part.strip().rstrip("/"))


def origin_allowed(origin: str | None, allowed: frozenset[str]) -> bool:
    if not origin or not allowed:
        return False
    return "*" in allowed or origin.rstrip("/") in allowed


class Config:
    """Everything the request handlers need, fixed at start."""

    def __init__(
        self,
        *,
        version: str,
        database_path: Path,
        cors_origins: frozenset[str],
        fault: str | None,
        invocation: str = "",
    ) -> None:
        self.version = version
        self.database_path = database_path
        self.cors_origins = cors_origins
        self.fault = fault
        self.invocation = invocation  # systemd's $INVOCATION_ID; empty when not run by systemd


# --------------------------------------------------------------------------- storage


def utc_now() -> str:
    now = time.time()
    millis = int((now % 1) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{millis:03d}Z"


def connect(database_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(database_path), timeout=10.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def init_database(database_path: Path) -> str:
    """Create the parent directory, switch to WAL and create the schema; returns the mode."""
    database_path.parent.mkdir(parents=True, exist_ok=True)
    with closing(connect(database_path)) as conn:
        row = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        with conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS notes ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " text TEXT NOT NULL,"
                " created_at TEXT NOT NULL)"
            )
    return str(row[0]) if row else "unknown"


def list_notes(database_path: Path) -> list[dict[str, Any]]:
    with closing(connect(database_path)) as conn:
        rows = conn.execute("SELECT id, text, created_at FROM notes ORDER BY id").fetchall()
    return [{"id": r["id"], "text": r["text"], "created_at": r["created_at"]} for r in rows]


def add_note(database_path: Path, text: str) -> dict[str, Any]:
    created_at = utc_now()
    with closing(connect(database_path)) as conn, conn:
        cur = conn.execute("INSERT INTO notes (text, created_at) VALUES (?, ?)", (text, created_at))
        note_id = cur.lastrowid
    return {"id": note_id, "text": text, "created_at": created_at}


# --------------------------------------------------------------------------- websocket


class WebSocketClosed(Exception):
    """The connection ended: a close frame (its code), or the socket went away (1006)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


def websocket_accept(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (RFC 6455, section 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode("ascii")).digest()).decode("ascii")


class WebSocket:
    """The server side of one websocket: frames read from the client (masked, possibly
    fragmented) and written to it (unmasked). Writes take a lock: shutdown may send a close
    frame from another thread while a handler is echoing."""

    def __init__(self, sock: socket.socket, reader: BinaryIO) -> None:
        self.sock = sock
        self.reader = reader
        self.lock = threading.Lock()
        self.closing = False

    def _read(self, n: int) -> bytes:
        data = self.reader.read(n)
        if len(data) != n:
            raise WebSocketClosed(1006, "connection lost")
        return data

    def _frame(self) -> tuple[bool, int, bytes]:
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        if not second & 0x80:
            # RFC 6455 5.1: a server must close on an unmasked frame. Caddy 2.6.2 sends its
            # close frame unmasked when a reload ends a proxied socket; a Rust backend on
            # tungstenite refuses it the same way.
            what = "close frame" if first & 0x0F == OP_CLOSE else "frame"
            self.close(1002, "client frames must be masked")
            raise WebSocketClosed(1002, f"unmasked {what}")
        if length > WS_MAX_MESSAGE:
            self.close(1009, "message too big")
            raise WebSocketClosed(1009, "message too big")
        mask = self._read(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self._read(length)))
        return bool(first & 0x80), first & 0x0F, payload

    def receive(self) -> tuple[int, bytes]:
        """The next message (opcode, payload); pings are answered on the way."""
        parts: list[bytes] = []
        opcode = OP_CONT
        while True:
            fin, op, payload = self._frame()
            if op == OP_PING:
                self.send(OP_PONG, payload)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise WebSocketClosed(code, payload[2:].decode("utf-8", "replace"))
            if op != OP_CONT:
                opcode = op
            parts.append(payload)
            if sum(map(len, parts)) > WS_MAX_MESSAGE:
                self.close(1009, "message too big")
                raise WebSocketClosed(1009, "message too big")
            if fin:
                return opcode, b"".join(parts)

    def send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        with self.lock:
            self.sock.sendall(head + payload)

    def send_text(self, text: str) -> None:
        self.send(OP_TEXT, text.encode("utf-8"))

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame once; the peer answers with its own and the handler ends."""
        if self.closing:
            return
        self.closing = True
        with suppress(OSError):
            self.send(OP_CLOSE, struct.pack("!H", code) + reason.encode("utf-8")[:120])

    def drop(self) -> None:
        """End the connection now (the peer did not answer our close frame in time)."""
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------- HTTP


class RequestError(Exception):
    """A client error answered as ``{"error": message}`` with ``status``."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Server(ThreadingHTTPServer):
    """Threaded server that tracks handler threads so shutdown can wait for them."""

    daemon_threads = False  # server_close() joins in-flight requests
    block_on_close = True
    # Python's default listen backlog of 5 turns a short stall under load into ~1 s client
    # delays (the kernel drops SYNs and the client retries after a second).
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], config: Config) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.config = config
        self.websockets: set[WebSocket] = set()
        self.websockets_lock = threading.Lock()
        super().__init__(address, Handler)

    def close_websockets(self, wait: float = WS_CLOSE_WAIT) -> None:
        """Close every open websocket with 1001 "going away": clients that reconnect reach
        whatever serves next. A peer that does not answer within `wait` is cut."""
        with self.websockets_lock:
            open_now = list(self.websockets)
        for ws in open_now:
            ws.close(1001, "server shutting down")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with self.websockets_lock:
                if not self.websockets:
                    return
            time.sleep(0.02)
        with self.websockets_lock:
            for ws in self.websockets:
                ws.drop()

    def server_bind(self) -> None:
        # HTTPServer.server_bind() calls socket.getfqdn(): no reverse DNS for us.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class Handler(BaseHTTPRequestHandler):
    server_version = "choiros-backend"
    # One request per connection: shutdown never waits on idle keep-alive connections.
    protocol_version = "HTTP/1.0"
    timeout = 15  # seconds a client may stall mid-request

    server: Server

    def version_string(self) -> str:
        return self.server_version

    # ---- plumbing

    @property
    def config(self) -> Config:
        return self.server.config

    def _origin(self) -> str | None:
        headers = getattr(self, "headers", None)
        return headers.get("Origin") if headers is not None else None

    def _identity_headers(self) -> None:
        """Which release and which process answered."""
        self.send_header("X-Choiros-Version", self.config.version)
        if self.config.invocation:
            self.send_header("X-Choiros-Invocation", self.config.invocation)

    def _cors_headers(self) -> None:
        if not self.config.cors_origins:
            return
        self.send_header("Vary", "Origin")
        origin = self._origin()
        if origin is not None and origin_allowed(origin, self.config.cors_origins):
            self.send_header("Access-Control-Allow-Origin", origin)

    def _send_json(
        self,
        status: HTTPStatus | int,
        payload: Any,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        body = (json.dumps(payload) + "\n").encode("utf-8")
        self.send_response(int(status))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self._identity_headers()
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self._cors_headers()
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(body)

    def _send_no_content(self, extra_headers: dict[str, str]) -> None:
        self.send_response(HTTPStatus.NO_CONTENT)
        self._identity_headers()
        for name, value in extra_headers.items():
            self.send_header(name, value)
        self._cors_headers()
        self.end_headers()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """JSON instead of the stock HTML error page (also used for malformed requests)."""
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._send_json(code, {"error": message or phrase})

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        code_text = str(int(code)) if isinstance(code, HTTPStatus) else str(code)
        forwarded = self.headers.get("X-Forwarded-For") if hasattr(self, "headers") else None
        client = self.client_address[0]
        if forwarded:
            client = f"{client} (for {forwarded})"
        log(f'{client} "{self.requestline}" {code_text}')

    def log_message(self, format: str, *args: Any) -> None:
        log(f"{self.client_address[0]} {format % args}")

    def _path(self) -> str:
        path = urlsplit(self.path).path or "/"
        if len(path) > 1:
            path = path.rstrip("/")
        return path

    def _read_json_body(self) -> Any:
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
        try:
            length = int(length_header)
        except ValueError:
            raise RequestError(HTTPStatus.BAD_REQUEST, "invalid Content-Length") from None
        if length < 0:
            raise RequestError(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
        if length > MAX_BODY_BYTES:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
        raw = self.rfile.read(length)
        if len(raw) != length:
            raise RequestError(HTTPStatus.BAD_REQUEST, "request body truncated")
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise RequestError(HTTPStatus.BAD_REQUEST, "request body is not valid JSON") from None

    def _dispatch(self, method: str) -> None:
        try:
            self._route(method, self._path())
        except RequestError as exc:
            self._send_json(exc.status, {"error": exc.message})
        except sqlite3.Error:
            log("database error:\n" + traceback.format_exc().rstrip())
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "database error"})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # ---- routes

    def _route(self, method: str, path: str) -> None:
        get_like = method in ("GET", "HEAD")
        if path == "/ws":
            if method != "GET":
                raise_method_not_allowed("GET")
            self._websocket()
        elif path == "/-/versions.json":
            if not get_like:
                raise_method_not_allowed("GET, HEAD")
            self._send_json(
                HTTPStatus.OK,
                {
                    APP_NAME: {"version": self.config.version},
                    "python": {"version": platform.python_version()},
                    "sqlite": {"version": sqlite3.sqlite_version},
                },
            )
        elif path == "/health":
            if not get_like:
                raise_method_not_allowed("GET, HEAD")
            self._health()
        elif path == "/api/version":
            if not get_like:
                raise_method_not_allowed("GET, HEAD")
            self._send_json(HTTPStatus.OK, {"version": self.config.version})
        elif path == "/api/notes":
            if self.config.fault == FAULT_NOTES_500:
                broken = {"error": "notes are broken in this release"}
                self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, broken)
            elif get_like:
                self._send_json(HTTPStatus.OK, list_notes(self.config.database_path))
            elif method == "POST":
                self._create_note()
            else:
                raise_method_not_allowed("GET, HEAD, POST")
        else:
            raise RequestError(HTTPStatus.NOT_FOUND, "not found")

    def _health(self) -> None:
        if self.config.fault == FAULT_HEALTH_500:
            self._send_json(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"status": "failing", "version": self.config.version, "fault": FAULT_HEALTH_500},
            )
            return
        self._send_json(HTTPStatus.OK, {"status": "ok", "version": self.config.version})

    def _websocket(self) -> None:
        """Upgrade to a websocket: greet with the version, echo every text message with it."""
        key = self.headers.get("Sec-WebSocket-Key", "")
        upgrade = self.headers.get("Upgrade", "").lower()
        if upgrade != "websocket" or not key or self.headers.get("Sec-WebSocket-Version") != "13":
            raise RequestError(HTTPStatus.BAD_REQUEST, "expected a websocket upgrade (RFC 6455, version 13)")
        self.protocol_version = "HTTP/1.1"  # a 101 answer is HTTP/1.1
        self.send_response(HTTPStatus.SWITCHING_PROTOCOLS)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", websocket_accept(key))
        self._identity_headers()
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        self.connection.settimeout(None)  # an idle websocket is not a stalled request
        ws = WebSocket(self.connection, self.rfile)
        server = self.server
        with server.websockets_lock:
            server.websockets.add(ws)
        version = self.config.version
        try:
            ws.send_text(json.dumps({"hello": APP_NAME, "version": version}))
            while True:
                opcode, payload = ws.receive()
                if opcode == OP_TEXT:
                    ws.send_text(json.dumps({"version": version, "echo": payload.decode("utf-8", "replace")}))
                elif opcode == OP_BINARY:
                    ws.send(OP_BINARY, payload)
        except WebSocketClosed as closed:
            log(f"websocket from {self.client_address[0]} closed: {closed.code} {closed.reason}".rstrip())
            if closed.code != 1006:
                ws.close(closed.code if closed.code not in (1005, 1006) else 1000)
        except OSError as exc:
            log(f"websocket from {self.client_address[0]} lost: {exc}")
        finally:
            with server.websockets_lock:
                server.websockets.discard(ws)

    def _create_note(self) -> None:
        payload = self._read_json_body()
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise RequestError(HTTPStatus.BAD_REQUEST, 'expected JSON {"text": "<non-empty>"}')
        if len(text) > MAX_NOTE_CHARS:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"text longer than {MAX_NOTE_CHARS}")
        note = add_note(self.config.database_path, text)
        self._send_json(HTTPStatus.CREATED, note, extra_headers={"Location": f"/api/notes/{note['id']}"})

    # ---- verbs

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:
        origin = self._origin()
        if origin is None:
            self._send_no_content({"Allow": CORS_ALLOW_METHODS})
        elif origin_allowed(origin, self.config.cors_origins):
            self._send_no_content(
                {
                    "Allow": CORS_ALLOW_METHODS,
                    "Access-Control-Allow-Methods": CORS_ALLOW_METHODS,
                    "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                    "Access-Control-Max-Age": CORS_MAX_AGE,
                }
            )
        else:
            self._send_json(HTTPStatus.FORBIDDEN, {"error": "origin not allowed"})


def raise_method_not_allowed(allow: str) -> None:
    raise RequestError(HTTPStatus.METHOD_NOT_ALLOWED, f"method not allowed (allow: {allow})")


# --------------------------------------------------------------------------- main


def parse_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="choiros backend (JSON API over SQLite). "
        "Environment: DATABASE_PATH (required), CORS_ALLOW_ORIGINS (optional).",
    )
    parser.add_argument("--port", type=parse_port, help="TCP port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--migrate",
        action="store_true",
        help="bring the database at DATABASE_PATH to this release's schema, then exit "
        "(idempotent: a release task run before the switch)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.port is None and not args.migrate:
        parser.error("--port is required (or --migrate)")

    raw_db = os.environ.get("DATABASE_PATH", "").strip()
    if not raw_db:
        sys.stderr.write(
            f"{PROG}: DATABASE_PATH is not set; refusing to start "
            "(set it to the SQLite file, e.g. /var/lib/choiros/choiros.db)\n"
        )
        return EXIT_USAGE

    root = release_root()
    version = read_version(root)
    fault = read_fault(root)
    if fault is not None and fault not in KNOWN_FAULTS:
        log(f"ignoring unknown FAULT {fault!r} (known: {', '.join(KNOWN_FAULTS)})")
        fault = None

    database_path = Path(raw_db).expanduser()
    if not database_path.is_absolute():
        database_path = Path.cwd() / database_path
    try:
        journal_mode = init_database(database_path)
    except (OSError, sqlite3.Error) as exc:
        log(f"cannot open database {database_path}: {exc}")
        return EXIT_FAILURE
    if args.migrate:
        log(f"database {database_path} is at {APP_NAME} {version}'s schema (journal_mode={journal_mode})")
        return EXIT_OK

    config = Config(
        version=version,
        database_path=database_path,
        cors_origins=parse_origins(os.environ.get("CORS_ALLOW_ORIGINS")),
        fault=fault,
        invocation=os.environ.get("INVOCATION_ID", "").strip(),
    )

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            log(f"received {signal.Signals(signum).name}, shutting down")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if fault is not None:
        log(f"FAULT {fault} is active in this release")
    if fault == FAULT_SLOW_START:
        log(f"FAULT slow-start: sleeping {SLOW_START_SECONDS:g}s before listening")
        if stop.wait(SLOW_START_SECONDS):
            return EXIT_OK

    try:
        server = Server((args.host, args.port), config)
    except OSError as exc:
        log(f"cannot listen on {args.host}:{args.port}: {exc}")
        return EXIT_FAILURE

    serve_thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="serve", daemon=True
    )
    serve_thread.start()
    log(
        f"{APP_NAME} {version} listening on http://{server.server_name}:{server.server_port} "
        f"(database {database_path}, journal_mode={journal_mode}, "
        f"cors={','.join(sorted(config.cors_origins)) or '-'})"
    )
    sd_notify(f"READY=1\nSTATUS=listening on {server.server_name}:{server.server_port}")
    if fault == FAULT_CHDIR:
        os.chdir("/")  # everything it needs is open or absolute by now

    exit_code = EXIT_OK
    started = time.monotonic()
    while not stop.is_set():
        if fault == FAULT_CRASH:
            remaining = CRASH_AFTER_SECONDS - (time.monotonic() - started)
            if remaining <= 0:
                log("FAULT crash: exiting with status 1")
                exit_code = EXIT_FAILURE
                break
            stop.wait(min(remaining, 0.5))
        else:
            stop.wait(0.5)

    sd_notify("STOPPING=1")
    server.shutdown()  # stop accepting
    server.close_websockets()  # their handlers would hold server_close() below forever
    server.server_close()  # close the socket, wait for in-flight requests
    serve_thread.join(timeout=5)
    if exit_code == EXIT_OK:
        log("stopped")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
