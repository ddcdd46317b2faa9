"""Locks, flock()ed so the kernel frees them when their holder dies:

- the app's lock, <state>/lock, held for a whole apply: one apply per app at a time;
- the host-wide lock, /run/reconciler/host.lock, held from an app's first change to what all
  apps share (Caddy's configuration and its reload, systemd's daemon-reload) to the end of
  its apply: two apps never validate and reload Caddy at the same time.
"""

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


HOST_LOCK = "/run/reconciler/host.lock"


def hold_host_lock(ctx: object, timeout: float = 120.0) -> None:
    """Take the host-wide lock for the rest of this apply (once; released when it ends)."""
    if getattr(ctx, "host_lock_fd", -1) >= 0:
        return
    makedirs(os.path.dirname(HOST_LOCK), 0o755)
    fd = os.open(HOST_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise AgentError(
                    f"another app's run held the host-wide lock ({HOST_LOCK}) for {timeout:.0f}s",
                    code="locked",
                ) from None
            time.sleep(0.1)
    ctx.host_lock_fd = fd  # type: ignore[attr-defined]


def release_host_lock(ctx: object) -> None:
    fd = getattr(ctx, "host_lock_fd", -1)
    if fd >= 0:
        os.close(fd)
        ctx.host_lock_fd = -1  # type: ignore[attr-defined]
