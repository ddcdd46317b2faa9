"""What people and the controller record on the host besides applies: a pause (who, when,
why) that every run respects, its resume (which also ends a hold left by `reconcile
rollback`), and notes such as whether a notification was delivered.

Both are written under the host lock, so a pause never lands in the middle of an apply: it
waits for the apply to finish, and every run that starts after it sees it. The pause is a
file in the state folder, part of every observation (and so of the fingerprint an apply
checks), and the agent itself refuses an apply with actions while it exists, unless the
request says `force`.
"""

from __future__ import annotations

import contextlib
import os

from . import records
from .fsops import makedirs, now
from .history import append_history
from .lock import HostLock
from .protocol import AgentError, Emit, Json, check_request


def paused(state_dir: str) -> Json | None:
    """The pause recorded on the host, or None. An unreadable pause file counts as a pause:
    someone meant to stop the reconciler, and guessing otherwise would undo their work."""
    try:
        record = records.load(state_dir, records.PAUSE, {})
    except records.StateFileError as exc:
        return {"by": "?", "at": "?", "reason": str(exc)}
    return record or None


def refuse_if_paused(state_dir: str, request: Json) -> None:
    """Called by apply under the lock: a plan made before the pause does not run after it."""
    if not request.get("actions") or request.get("force"):
        return
    record = paused(state_dir)
    if record is not None:
        raise AgentError(
            f"the host is paused by {record.get('by', '?')} since {record.get('at', '?')}: "
            f"{record.get('reason') or 'no reason given'}",
            code="paused",
        )


def pause(request: Json, emit: Emit) -> Json:
    """Pause (request["pause"] is {by, reason}) or resume (it is null); returns what was
    recorded before and what is recorded now. A resume ends a hold too (`held`: the hold it
    ended, or null)."""
    check_request(request)
    state_dir = request["state"]
    makedirs(state_dir, 0o700)
    with HostLock(state_dir, request.get("holder", {}), float(request.get("lock_timeout", 0)), emit):
        before = paused(state_dir)
        wanted = request.get("pause")
        after: Json | None = None
        held: Json | None = None
        if wanted is not None:
            reason = str(wanted.get("reason") or "")
            after = {"by": str(wanted.get("by") or "?"), "reason": reason, "at": now()}
            records.save(state_dir, records.PAUSE, after)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(state_dir, records.PAUSE))
            held = _held(state_dir)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(state_dir, records.HOLD))
        if held is not None:
            user = str((request.get("holder") or {}).get("user") or "?")
            append_history(
                state_dir,
                {
                    "kind": "unhold",
                    "finished": now(),
                    "result": "ok",
                    "user": user,
                    "version": held.get("version"),
                },
            )
        if before != after:
            record = {"kind": "pause" if after else "resume", "finished": now(), "result": "ok"}
            who = after or wanted or {}
            record["user"] = str((request.get("holder") or {}).get("user") or who.get("by") or "?")
            if after:
                record["reason"] = after["reason"]
            append_history(state_dir, record)
    return {"event": "result", "ok": True, "before": before, "after": after, "held": held}


def _held(state_dir: str) -> Json | None:
    """The hold a resume ends; an unreadable record is ended too (that is what resume is for)."""
    try:
        record = records.load(state_dir, records.HOLD, {})
    except records.StateFileError:
        return {"version": "?", "config": "?", "reason": "held.json was unreadable"}
    return record or None


def note(request: Json, emit: Emit) -> Json:
    """Append records to the host's history (under the lock: a trim never loses one)."""
    check_request(request)
    state_dir = request["state"]
    makedirs(state_dir, 0o700)
    with HostLock(state_dir, {"note": True}, float(request.get("lock_timeout", 0)), emit):
        for record in request["records"]:
            if isinstance(record, dict):
                append_history(state_dir, dict(record, finished=record.get("finished") or now()))
    return {"event": "result", "ok": True}
