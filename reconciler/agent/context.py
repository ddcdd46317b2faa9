"""What every action handler receives: the request, the payload stream, the event sink, and
what this apply has done so far that a later action must know about."""

from __future__ import annotations

from typing import IO

from .protocol import Emit, Json


class Context:
    def __init__(self, request: Json, payload: IO[bytes] | None, emit: Emit) -> None:
        self.request = request
        self.payload = payload
        self.emit = emit
        self.state_dir: str = request["observe"]["state"]
        self.caddy_backup: bytes | None = None
        self.started: set[str] = set()  # units (re)started by this apply: their gates must run
        self.snapshots_taken: set[str] = set()  # database snapshots written by this apply
