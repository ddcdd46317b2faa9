"""What every action handler receives: the request, the payload stream, the event sink, and
what this apply has done so far that a later action must know about."""

from __future__ import annotations

import time
from typing import IO

from .protocol import Emit, Json


class Context:
    def __init__(self, request: Json, payload: IO[bytes] | None, emit: Emit) -> None:
        self.request = request
        self.payload = payload
        self.emit = emit
        self.state_dir: str = request["observe"]["state"]
        self.started: set[str] = set()  # units (re)started by this apply: their gates must run
        self.snapshots_taken: set[str] = set()  # database snapshots written by this apply
        self.caddy_backups: dict[str, bytes | None] = {}  # Caddy files as they were before it
        self.host_lock_fd = -1  # the host-wide lock, once taken (see lock.py)
        self.stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())  # names this apply's backups
