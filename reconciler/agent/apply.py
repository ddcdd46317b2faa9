"""Apply: take the lock, check the host still matches the plan's observation, run the actions
in order, and, when one fails, undo on the host itself.

The rollback travels with the request: the controller planned it (a pure function of the
host's recorded last good state) and the agent runs it under the same lock, right after the
failure. So a controller that dies or loses its connection mid-gate still leaves a host that
was rolled back, and a run waiting on the lock finds it consistent.

Cancellation (the client went away, or asked to stop) is honoured between actions, but a
process this apply started is always gated first: an interruption never leaves a process
that serves without its gate having run.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import IO

from . import records
from .caddy import do_load_caddy, do_write_caddyfile
from .context import Context
from .database import do_restore_database, do_snapshot_database
from .files import (
    do_daemon_reload,
    do_record_good,
    do_record_hold,
    do_record_maintenance,
    do_record_quarantine,
    do_remove_file,
    do_set_symlink,
    do_systemctl,
    do_write_file,
)
from .fsops import now
from .health import do_check_health
from .history import append_history
from .images import do_load_image, do_prune_frontend, do_pull_frontend
from .lock import HostLock, release_host_lock
from .observe import fingerprint, observe
from .operator import refuse_if_paused
from .protocol import AgentError, Emit, Json, check_request
from .releases import do_link_shared, do_prune_release, do_upload_release
from .systemd import stop_unit
from .tasks import do_run_task

HANDLERS: dict[str, Callable[[Context, Json], Json]] = {
    "upload_release": do_upload_release,
    "write_file": do_write_file,
    "remove_file": do_remove_file,
    "link_shared": do_link_shared,
    "run_task": do_run_task,
    "set_symlink": do_set_symlink,
    "daemon_reload": do_daemon_reload,
    "systemctl": do_systemctl,
    "check_health": do_check_health,
    "write_caddyfile": do_write_caddyfile,
    "load_caddy": do_load_caddy,
    "record_quarantine": do_record_quarantine,
    "record_good": do_record_good,
    "record_maintenance": do_record_maintenance,
    "record_hold": do_record_hold,
    "prune_release": do_prune_release,
    "load_image": do_load_image,
    "pull_frontend": do_pull_frontend,
    "prune_frontend": do_prune_frontend,
    "snapshot_database": do_snapshot_database,
    "restore_database": do_restore_database,
}

# Only a host whose root made this file honours the fault points the tests use: a request
# alone (or an environment variable on the controller) cannot kill an agent on a real host.
FAULT_SWITCH = "/run/reconciler/fault-injection"


def failure_of(index: int, exc: BaseException) -> Json:
    """Any exception an action raises, as a recorded failure: never a bare traceback."""
    if isinstance(exc, AgentError):
        return {"index": index, "error": exc.message, "detail": exc.detail, "code": exc.code}
    if isinstance(exc, OSError):
        where = getattr(exc, "filename", "") or ""
        return {"index": index, "error": f"{exc.strerror or exc} ({where})", "code": "os"}
    if isinstance(exc, records.StateFileError):
        return {"index": index, "error": str(exc), "code": "state"}
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f"{os.path.basename(frame.filename)}:{frame.lineno}" if frame else "?"
    return {
        "index": index,
        "error": f"{type(exc).__name__}: {exc}",
        "detail": f"raised in the host agent at {at}",
        "code": "exception",
    }


class Run:
    """One apply's actions, in order, with what happens when one fails."""

    def __init__(self, ctx: Context, cancelled: Callable[[], bool], fault: Json) -> None:
        self.ctx = ctx
        self.cancelled = cancelled
        self.fault = fault
        self.done: list[Json] = []
        self.notes: list[Json] = []

    def _one(self, index: int, action: Json, phase: str) -> Json:
        ctx = self.ctx
        if phase == "forward" and self.fault.get("pause_before_action") == index + 1:
            time.sleep(float(self.fault.get("pause", 3)))
        ctx.emit({"event": "action_start", "index": index, "phase": phase})
        if phase == "forward" and self.fault.get("kill_during_action") == index + 1:
            timer = threading.Timer(float(self.fault.get("delay", 0.5)), _die)
            timer.daemon = True
            timer.start()
        t0 = time.monotonic()
        result = HANDLERS[action["kind"]](ctx, action)
        ms = round((time.monotonic() - t0) * 1000, 1)
        ctx.emit({"event": "action_done", "index": index, "ms": ms, "result": result, "phase": phase})
        if phase == "forward" and self.fault.get("kill_after_action") == index + 1:
            _die()
        return {"index": index, "ms": ms}

    def forward(self, actions: list[Json]) -> Json | None:
        for index, action in enumerate(actions):
            if self.cancelled() and not self._must_finish(action):
                return self._cancelled(index, actions)
            try:
                self.done.append(self._one(index, action, "forward"))
            except Exception as exc:
                failure = failure_of(index, exc)
                failure["on_failure"] = action.get("on_failure", "report")
                self.ctx.emit({"event": "action_failed", **failure})
                if failure["on_failure"] != "stop":
                    return failure
                self.notes.append(self._stop_idle(action, failure))
        return None

    def _cancelled(self, index: int, actions: list[Json]) -> Json:
        """Stopped between two actions. If the host is between two states (something that a
        failure there would undo was done, and some of it is still to come), it goes back to
        its last good state: an interrupted deploy leaves the host as it was, never half-way."""
        undoable = ("rollback", "quarantine")
        started = any(actions[d["index"]].get("on_failure") in undoable for d in self.done)
        unfinished = any(a.get("on_failure") in undoable for a in actions[index:])
        on_failure = "rollback" if started and unfinished else "report"
        return {
            "index": index,
            "error": "cancelled before this action",
            "code": "cancelled",
            "on_failure": on_failure,
        }

    def _must_finish(self, action: Json) -> bool:
        """The gate of a process this apply started runs even when the client has gone."""
        return action["kind"] == "check_health" and action.get("unit") in self.ctx.started

    def _stop_idle(self, gate: Json, failure: Json) -> Json:
        """An idle process that fails its gate is stopped and its configuration quarantined;
        it serves nothing, so the rest of the plan goes on."""
        unit = gate["unit"]
        stop_unit(unit)
        quarantine = gate.get("quarantine") or {}
        if quarantine:
            records.quarantine(self.ctx.state_dir, quarantine["key"], quarantine["version"], failure["error"])
        note = {"event": "idle_stopped", "unit": unit, "why": failure["error"]}
        self.ctx.emit(note)
        return note

    def rollback(self, plan: Json, failure: Json) -> Json:
        """Back to the recorded last good state. The failed configuration is quarantined first,
        so a rollback that is itself interrupted still leaves it refused by the next run."""
        quarantine = plan.get("quarantine") or {}
        if failure.get("on_failure") == "quarantine" and quarantine:
            reason = failure["error"].splitlines()[0]
            records.quarantine(self.ctx.state_dir, quarantine["key"], quarantine["version"], reason)
        self.ctx.emit({"event": "rollback_start", "to": plan.get("to")})
        for index, action in enumerate(plan.get("actions", [])):
            try:
                self._one(index, action, "rollback")
            except Exception as exc:
                broken = failure_of(index, exc)
                self.ctx.emit({"event": "rollback_failed", **broken})
                return {"ok": False, "to": plan.get("to"), "failure": broken}
        return {"ok": True, "to": plan.get("to")}


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def apply(request: Json, payload: IO[bytes] | None, emit: Emit, cancelled: Callable[[], bool]) -> Json:
    """Lock, check the host still matches the plan's observation, run the actions, record."""
    check_request(request)
    spec = request["observe"]
    actions: list[Json] = request["actions"]
    fault = (request.get("fault") or {}) if os.path.exists(FAULT_SWITCH) else {}
    ctx = Context(request, payload, emit)
    started = time.monotonic()
    with HostLock(ctx.state_dir, request.get("holder", {}), float(request.get("lock_timeout", 0)), emit):
        locked_at = time.time()
        emit({"event": "locked"})
        refuse_if_paused(ctx.state_dir, request)
        before = observe(spec)
        if request.get("expect") and fingerprint(before) != request["expect"]:
            raise AgentError("the host changed since it was observed for this plan", code="stale")
        if not actions and request.get("record") is False:
            return {"event": "result", "ok": True, "failure": None, "done": [], "after": before}
        run = Run(ctx, cancelled, fault)
        try:
            failure = run.forward(actions)
            rolled_back = None
            plan = request.get("rollback")
            if failure and plan and failure.get("on_failure") in ("rollback", "quarantine"):
                rolled_back = run.rollback(plan, failure)
        finally:
            release_host_lock(ctx)
        record = dict(request.get("journal") or {})
        record.update(
            finished=now(),
            seconds=round(time.monotonic() - started, 3),
            result="failed" if failure else "ok",
            actions_done=len(run.done),
            locked_at=round(locked_at, 3),
            finished_at=round(time.time(), 3),
        )
        if failure:
            record["error"] = failure["error"]
        if rolled_back:
            record["rolled_back"] = rolled_back
            record["result"] = "rolled_back" if rolled_back["ok"] else "failed"
        if run.notes:
            record["notes"] = run.notes
        append_history(ctx.state_dir, record)
    after = observe(spec)
    return {
        "event": "result",
        "ok": failure is None,
        "failure": failure,
        "rolled_back": rolled_back,
        "notes": run.notes,
        "done": run.done,
        "after": after,
    }
