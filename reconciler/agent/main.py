"""Entry points: `handle` (shared by the local executor) and `main`, the remote side of one
SSH exec: a JSON request line on stdin, optional payload bytes, JSON event lines on stdout.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

from .observe import observe
from .protocol import CHUNK, AgentError, Emit, Json, check_request

# Only `observe` is imported up front: a no-op run asks for nothing else, and on the host
# every module is compiled from source on each exec, so the apply side (two thirds of the
# agent) would cost every no-op ~15 ms for nothing. The other requests import theirs.


class LineEmitter:
    """Writes events as JSON lines to stdout from any thread. A write that fails means the
    client went away: `gone` is set and the run stops at the next action boundary."""

    def __init__(self) -> None:
        self.gone = threading.Event()
        self._lock = threading.Lock()
        self._out = sys.stdout.buffer

    def __call__(self, event: Json) -> None:
        if self.gone.is_set():
            return
        with self._lock:
            try:
                self._out.write(json.dumps(event).encode() + b"\n")
                self._out.flush()
            except OSError:
                self.gone.set()


def handle(
    request: Json, payload: IO[bytes] | None, emit: Emit, cancelled: Callable[[], bool] = lambda: False
) -> Json:
    """Entry point shared by the local executor and `main` below."""
    try:
        check_request(request)
        op = request["op"]
        if op == "observe":
            return {"event": "result", "ok": True, "snapshot": observe(request["observe"])}
        if op == "apply":
            from .apply import apply

            return apply(request, payload, emit, cancelled)
        if op in ("pause", "note"):
            from .operator import note, pause

            return (pause if op == "pause" else note)(request, emit)
        if op == "releases":
            from .inventory import releases

            return releases(request)
        if op == "logs":
            from .journal import logs

            return logs(request, emit, cancelled)
        if op == "exec":
            raise AgentError(
                "exec runs attached to the caller's terminal (agent/attach.py), not as a request"
            )
        from .history import history

        return history(request)
    except AgentError as exc:
        return {"event": "error", "error": exc.message, "detail": exc.detail, "code": exc.code}
    except Exception as exc:  # an answer, never a traceback the controller cannot read
        from .apply import failure_of

        failure = failure_of(-1, exc)
        return {
            "event": "error",
            "error": failure["error"],
            "detail": failure.get("detail", ""),
            "code": failure["code"],
        }


def main() -> None:
    """stdin: one JSON request line, then `payload_size` bytes, then EOF or a cancel line."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # finish the current action if the link drops
    stdin = sys.stdin.buffer
    emit = LineEmitter()
    gone = emit.gone

    request = json.loads(stdin.readline())
    size = int(request.get("payload_size") or 0)
    payload_read = threading.Event()

    def watch_stdin() -> None:
        # After the payload, stdin stays open while the client lives: EOF or any line = stop.
        payload_read.wait()
        stdin.readline()
        gone.set()

    if not size:
        payload_read.set()
    threading.Thread(target=watch_stdin, daemon=True).start()
    payload = io.BufferedReader(_PayloadDone(stdin, size, payload_read), CHUNK) if size else None
    emit(handle(request, payload, emit, gone.is_set))
    # The watcher still blocks in readline() holding stdin's lock: a normal interpreter exit
    # would wait a second for it and then abort, keeping the SSH session (and sshd's limit of
    # ten per connection) busy all that time. The answer is out; leave at once.
    sys.stdout.flush()
    os._exit(0)


class _PayloadDone(io.RawIOBase):
    """Reads exactly `size` bytes of stdin, then signals that stdin is free for control lines."""

    def __init__(self, raw: IO[bytes], size: int, done: threading.Event) -> None:
        self.raw = raw
        self.left = size
        self.done = done

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self.left <= 0:
            self.done.set()
            return 0
        data = self.raw.read(min(len(buf), self.left))
        if not data:
            self.done.set()
            return 0
        n = len(data)
        buf[:n] = data
        self.left -= n
        if self.left <= 0:
            self.done.set()
        return n
