"""choiros frontend dev server: serves ``frontend/src`` live (standard library only).

Every request reads the file from disk, so edits show up on the next reload. HTML pages
get the release version injected exactly as ``build.py`` does for ``frontend/dist``,
plus a visible "dev server" marker. Every response carries ``X-Dev-Server: 1``;
``/__dev/health`` answers 200. SIGTERM and SIGINT stop the server gracefully (exit 0).

This module also owns the page rendering used by ``build.py`` (:func:`render_page`).
"""

from __future__ import annotations

import argparse
import html
import json
import mimetypes
import os
import signal
import socket
import socketserver
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import unquote, urlsplit

PROG = "choiros-frontend-dev"
DEV_VERSION = "0.0.0-dev"

MODE_RELEASE = "release"
MODE_DEV_SERVER = "dev-server"
VERSION_TOKEN = "{{CHOIROS_VERSION}}"
MODE_TOKEN = "{{CHOIROS_MODE}}"
BANNER_TOKEN = "{{CHOIROS_BANNER}}"
BANNERS = {MODE_RELEASE: "", MODE_DEV_SERVER: " \u2014 dev server"}

HEALTH_PATH = "/__dev/health"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


# --------------------------------------------------------------------------- rendering


def render_page(template: str, version: str, mode: str) -> str:
    """Substitute the version/mode tokens of an HTML template (``mode``: release|dev-server)."""
    if mode not in BANNERS:
        raise ValueError(f"unknown mode {mode!r}")
    # Versions are restricted to [A-Za-z0-9._+-] by build.py; escape anyway.
    safe_version = html.escape(version, quote=True)
    return (
        template.replace(VERSION_TOKEN, safe_version)
        .replace(MODE_TOKEN, mode)
        .replace(BANNER_TOKEN, BANNERS[mode])
    )


# --------------------------------------------------------------------------- release


def release_root() -> Path:
    """The release (or source) root: the parent of this module's directory, by real path."""
    return Path(os.path.realpath(__file__)).parent.parent


def read_version(root: Path) -> str:
    try:
        text = (root / "VERSION").read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return DEV_VERSION
    return text or DEV_VERSION


def log(message: str) -> None:
    sys.stderr.write(f"{PROG}: {message}\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- HTTP


class Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], root: Path, src_dir: Path) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.root = root
        self.src_dir = src_dir
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # No socket.getfqdn() (reverse DNS) as HTTPServer.server_bind() would do.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class Handler(BaseHTTPRequestHandler):
    server_version = "choiros-frontend-dev"
    protocol_version = "HTTP/1.0"
    timeout = 15

    server: Server

    def version_string(self) -> str:
        return self.server_version

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Dev-Server", "1")
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any) -> None:
        self._send(status, (json.dumps(payload) + "\n").encode("utf-8"), "application/json")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self._send_json(code, {"error": message or phrase})

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        code_text = str(int(code)) if isinstance(code, HTTPStatus) else str(code)
        log(f'{self.client_address[0]} "{self.requestline}" {code_text}')

    def log_message(self, format: str, *args: Any) -> None:
        log(f"{self.client_address[0]} {format % args}")

    def _resolve(self, url_path: str) -> Path | None:
        """Map a URL path to a file under src_dir; None when outside it or missing."""
        src = self.server.src_dir.resolve()
        relative = unquote(url_path).lstrip("/")
        if "\0" in relative:
            return None
        candidate = (src / relative).resolve()
        if candidate != src and src not in candidate.parents:
            return None
        if candidate.is_dir():
            candidate = candidate / "index.html"
        return candidate if candidate.is_file() else None

    def _serve(self) -> None:
        path = urlsplit(self.path).path or "/"
        if path == HEALTH_PATH:
            version = read_version(self.server.root)
            self._send_json(HTTPStatus.OK, {"status": "ok", "mode": MODE_DEV_SERVER, "version": version})
            return
        target = self._resolve(path)
        if target is None and "." not in unquote(path).rsplit("/", 1)[-1] and ".." not in unquote(path):
            # A client-side route (/settings): the app's page, as Caddy answers it with
            # frontend.spa; a missing file (with an extension) stays a 404.
            target = self._resolve("/index.html")
        if target is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": "not found", "path": path})
            return
        try:
            data = target.read_bytes()  # read per request: edits show up immediately
        except OSError as exc:
            log(f"cannot read {target}: {exc}")
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "cannot read file"})
            return
        suffix = target.suffix.lower()
        content_type = CONTENT_TYPES.get(suffix) or (
            mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        )
        if suffix == ".html":
            version = read_version(self.server.root)
            page = render_page(data.decode("utf-8"), version, MODE_DEV_SERVER)
            data = page.encode("utf-8")
        self._send(HTTPStatus.OK, data, content_type)

    def do_GET(self) -> None:
        try:
            self._serve()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_HEAD(self) -> None:
        self.do_GET()


# --------------------------------------------------------------------------- main


def parse_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description="choiros frontend dev server (serves frontend/src live)"
    )
    parser.add_argument("--port", type=parse_port, required=True, help="TCP port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    args = parser.parse_args(argv)

    root = release_root()
    src_dir = root / "frontend" / "src"
    if not (src_dir / "index.html").is_file():
        log(f"{src_dir}/index.html not found")
        return 1

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stop.is_set():
            log(f"received {signal.Signals(signum).name}, shutting down")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        server = Server((args.host, args.port), root, src_dir)
    except OSError as exc:
        log(f"cannot listen on {args.host}:{args.port}: {exc}")
        return 1
    serve_thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="serve", daemon=True
    )
    serve_thread.start()
    log(
        f"choiros {read_version(root)} dev server on "
        f"http://{server.server_name}:{server.server_port} serving {src_dir}"
    )
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    serve_thread.join(timeout=5)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
