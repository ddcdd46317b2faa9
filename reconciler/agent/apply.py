"""Apply: take the lock, check the host still matches the plan's observation, run the
actions in order, write the history record, observe again.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from typing import IO

from .caddy import do_load_caddy, do_write_caddyfile
from .context import Context
from .database import do_restore_database, do_snapshot_database
from .files import (
    do_daemon_reload,
    do_record_quarantine,
    do_remove_file,
    do_set_symlink,
    do_systemctl,
    do_write_file,
)
from .fsops import atomic_write, now, read_json
from .health import do_check_health
from .images import do_load_image
from .lock import HostLock
from .observe import fingerprint, observe
from .protocol import AgentError, Emit, Json
from .releases import do_prune_release, do_upload_release

HANDLERS: dict[str, Callable[[Context, Json], Json]] = {
    "upload_release": do_upload_release,
    "write_file": do_write_file,
    "remove_file": do_remove_file,
    "set_symlink": do_set_symlink,
    "daemon_reload": do_daemon_reload,
    "systemctl": do_systemctl,
    "check_health": do_check_health,
    "write_caddyfile": do_write_caddyfile,
    "load_caddy": do_load_caddy,
    "record_quarantine": do_record_quarantine,
    "prune_release": do_prune_release,
    "load_image": do_load_image,
    "snapshot_database": do_snapshot_database,
    "restore_database": do_restore_database,
}


def append_history(state_dir: str, record: Json, keep: int = 1000) -> None:
    path = os.path.join(state_dir, "history.jsonl")
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, line)
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size > keep * 4096:  # trim rarely, keeping the newest records
        with open(path, "rb") as fh:
            lines = fh.readlines()[-keep:]
        atomic_write(path, b"".join(lines), 0o640)


def apply(request: Json, payload: IO[bytes] | None, emit: Emit, cancelled: Callable[[], bool]) -> Json:
    """Lock, check the host still matches the plan's observation, run the actions, record."""
    spec = request["observe"]
    actions: list[Json] = request["actions"]
    fault_after = int(request.get("fault_after_action") or 0)
    ctx = Context(request, payload, emit)
    started = time.monotonic()
    done: list[Json] = []
    failure: Json | None = None
    with HostLock(ctx.state_dir, request.get("holder", {}), float(request.get("lock_timeout", 0)), emit):
        locked_at = time.time()
        emit({"event": "locked"})
        before = observe(spec)
        if request.get("expect") and fingerprint(before) != request["expect"]:
            raise AgentError("the host changed since it was observed for this plan", code="stale")
        for index, action in enumerate(actions):
            if cancelled():
                failure = {"index": index, "error": "cancelled before this action", "code": "cancelled"}
                break
            emit({"event": "action_start", "index": index})
            t0 = time.monotonic()
            try:
                result = HANDLERS[action["kind"]](ctx, action)
            except AgentError as exc:
                failure = {"index": index, "error": exc.message, "detail": exc.detail, "code": exc.code}
                emit({"event": "action_failed", **failure})
                break
            except OSError as exc:
                failure = {
                    "index": index,
                    "error": f"{exc.strerror or exc} ({getattr(exc, 'filename', '') or ''})",
                    "code": "os",
                }
                emit({"event": "action_failed", **failure})
                break
            ms = round((time.monotonic() - t0) * 1000, 1)
            done.append({"index": index, "ms": ms})
            emit({"event": "action_done", "index": index, "ms": ms, "result": result})
            if fault_after and index + 1 == fault_after:
                os.kill(os.getpid(), signal.SIGKILL)  # test-only fault injection
        if not actions and request.get("record") is False:
            return {"event": "result", "ok": True, "failure": None, "done": [], "after": before}
        record = dict(request.get("journal", {}))
        record.update(
            finished=now(),
            seconds=round(time.monotonic() - started, 3),
            result="failed" if failure else "ok",
            actions_done=len(done),
            locked_at=round(locked_at, 3),
            finished_at=round(time.time(), 3),
        )
        if failure:
            record["error"] = failure["error"]
        append_history(ctx.state_dir, record)
    after = observe(spec)
    return {"event": "result", "ok": failure is None, "failure": failure, "done": done, "after": after}


def history(request: Json) -> Json:
    path = os.path.join(request["state"], "history.jsonl")
    limit = int(request.get("limit", 20))
    try:
        with open(path, "rb") as fh:
            lines = fh.readlines()[-limit:]
    except FileNotFoundError:
        lines = []
    records = []
    for line in lines:
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return {
        "event": "result",
        "ok": True,
        "records": records,
        "quarantine": read_json(os.path.join(request["state"], "quarantine.json")) or {},
    }
