"""The host lock: flock on <state>/lock, freed by the kernel when its holder dies."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time

from .fsops import makedirs
from .protocol import AgentError, Emit, Json


def lock_state(state_dir: str) -> Json:
    path = os.path.join(state_dir, "lock")
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return {"held": False}
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return {"held": True, "holder": read_holder(path)}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return {"held": False}
    finally:
        os.close(fd)


def read_holder(path: str) -> Json:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


class HostLock:
    """flock on <state>/lock: the kernel frees it when the holder dies, so no stale locks."""

    def __init__(self, state_dir: str, holder: Json, timeout: float, emit: Emit) -> None:
        self.path = os.path.join(state_dir, "lock")
        self.holder = holder
        self.timeout = timeout
        self.emit = emit
        self.fd = -1

    def __enter__(self) -> HostLock:
        makedirs(os.path.dirname(self.path), 0o700)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        start = time.monotonic()
        announced = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= self.timeout:
                    holder = read_holder(self.path)
                    os.close(self.fd)
                    raise AgentError("lock held", json.dumps(holder), code="locked") from None
                if not announced:
                    self.emit({"event": "lock_wait", "holder": read_holder(self.path)})
                    announced = True
                time.sleep(min(0.2, max(0.0, self.timeout - waited)))
        os.ftruncate(self.fd, 0)
        info = dict(self.holder, pid=os.getpid(), since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        os.pwrite(self.fd, json.dumps(info).encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing releases the flock
