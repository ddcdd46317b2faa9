"""Steady traffic through Caddy: reads and SQLite writes through the example backend's API,
and the frontend's page, on a fixed schedule (open loop: a request that hangs does not delay
the next one). Each answer says which process gave it (X-Choiros-Invocation, systemd's
$INVOCATION_ID) and which release (X-Choiros-Version); each write that was acknowledged (201)
is kept, to look for it in the database later."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

# Per 10 requests: 5 reads of the API, 3 writes, 2 pages.
PATTERN = ("read", "write", "read", "page", "read", "write", "read", "page", "read", "write")
PAGE_VERSION = re.compile(r"choiros ([A-Za-z0-9._+-]+)")


@dataclass(slots=True)
class Sample:
    kind: str  # read (GET /api/version), write (POST /api/notes), page (GET /)
    sent: float  # time.monotonic() when the request left
    done: float = 0.0  # when its answer (or the error) came back
    status: int = 0
    error: str | None = None
    invocation: str = ""  # the backend process that answered (empty for the page)
    version: str = ""
    note: tuple[int, str] | None = None  # a write acknowledged: (its id, its text)

    @property
    def failed(self) -> bool:
        """No answer, or a server error (Caddy's 502 when no backend answered, a 500)."""
        return self.error is not None or self.status >= 500


class Traffic:
    """Requests at `rate` per second to the host's port 80 until stopped."""

    def __init__(self, address: str, rate: float, tag: str, timeout: float = 10.0) -> None:
        self.address = address
        self.rate = rate
        self.tag = tag
        self.timeout = timeout
        self.samples: list[Sample] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="chaos-traffic")
        self.thread = threading.Thread(target=self._schedule, name="chaos-schedule", daemon=True)
        self.written = 0

    def start(self) -> Traffic:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)
        self.pool.shutdown(wait=True)

    def snapshot(self) -> list[Sample]:
        with self.lock:
            return list(self.samples)

    def _schedule(self) -> None:
        start = time.monotonic()
        i = 0
        while not self.stopping.is_set():
            due = start + i / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                self.stopping.wait(delay)
                if self.stopping.is_set():
                    break
            kind = PATTERN[i % len(PATTERN)]
            text = None
            if kind == "write":
                self.written += 1
                text = f"chaos {self.tag} {self.written}"
            self.pool.submit(self._one, kind, text)
            i += 1

    def _one(self, kind: str, text: str | None) -> None:
        sample = Sample(kind, time.monotonic())
        conn = http.client.HTTPConnection(self.address, 80, timeout=self.timeout)
        try:
            headers = {"Connection": "close"}
            if kind == "write":
                body = json.dumps({"text": text}).encode()
                headers["Content-Type"] = "application/json"
                conn.request("POST", "/api/notes", body=body, headers=headers)
            else:
                conn.request("GET", "/api/version" if kind == "read" else "/", headers=headers)
            response = conn.getresponse()
            data = response.read()
            sample.status = response.status
            sample.invocation = response.getheader("X-Choiros-Invocation", "") or ""
            sample.version = response.getheader("X-Choiros-Version", "") or ""
            if kind == "page":
                found = PAGE_VERSION.search(data.decode("utf-8", "replace"))
                sample.version = found.group(1) if found else ""
            if kind == "write" and response.status == 201 and text is not None:
                note = json.loads(data)
                sample.note = (int(note["id"]), text)
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            sample.error = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"[:120]
        finally:
            sample.done = time.monotonic()
            conn.close()
            with self.lock:
                self.samples.append(sample)
