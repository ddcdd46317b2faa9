"""Webhook receivers on the loopback for notification tests: one that records what it is
sent, one that answers 500, one that hangs. Each is a real HTTP server in a thread."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, behaviour: str = "ok") -> None:
        self.behaviour = behaviour  # ok | fail (500) | hang
        self.posts: list[dict[str, Any]] = []  # {"body": ..., "headers": ..., "t": ...}
        self.hits = 0
        self.lock = threading.Lock()
        self.release = threading.Event()  # lets hanging handlers go when the test ends
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with receiver.lock:
                    receiver.hits += 1
                if receiver.behaviour == "hang":
                    receiver.release.wait(60)
                    return
                if receiver.behaviour == "fail":
                    self.send_response(500)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.posts.append(
                        {"body": json.loads(raw), "headers": dict(self.headers), "t": time.monotonic()}
                    )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def events(self) -> list[str]:
        with self.lock:
            return [p["body"].get("event", p["body"].get("text", "")) for p in self.posts]

    def wait_for(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.posts) >= count:
                    return list(self.posts)
            time.sleep(0.05)
        raise AssertionError(f"{count} posts expected within {timeout}s, got {self.events()}")


@contextmanager
def receivers(*behaviours: str) -> Iterator[list[Receiver]]:
    started = [Receiver(b) for b in behaviours]
    for r in started:
        r.thread.start()
    try:
        yield started
    finally:
        for r in started:
            r.release.set()
            r.server.shutdown()
            r.server.server_close()
