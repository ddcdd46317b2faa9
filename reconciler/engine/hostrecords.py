"""Requests that record something on the host without planning anything: a pause and its
resume (`reconcile pause` / `resume`; a resume ends a hold too), and notes in the host's history (whether a
notification was delivered). The agent writes each under the host lock."""

from __future__ import annotations

import getpass
import os
import socket
from typing import Any

from reconciler.agent.protocol import PROTOCOL
from reconciler.errors import HostError, LockHeld
from reconciler.executors.base import Executor, OnEvent
from reconciler.observe.snapshot import Hold, Pause, hold_of, pause_of
from reconciler.spec.model import DesiredState


def who() -> str:
    """How runs and pauses name the person or machine behind them: user@host."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def set_pause(
    executor: Executor,
    desired: DesiredState,
    reason: str | None,
    *,
    lock_timeout: float,
    on_event: OnEvent | None = None,
) -> tuple[Pause | None, Pause | None, Hold | None]:
    """Pause the host (reason not None) or resume it (None), which also ends a hold left by
    `reconcile rollback`. Returns (pause before, pause after, the hold it ended)."""
    request: dict[str, Any] = {
        "op": "pause",
        "protocol": PROTOCOL,
        "state": desired.layout.state,
        "pause": None if reason is None else {"by": who(), "reason": reason},
        "holder": {
            "user": who(),
            "client_pid": os.getpid(),
            "doing": "pause" if reason is not None else "resume",
        },
        "lock_timeout": lock_timeout,
    }
    answer = executor.request(request, on_event=on_event)
    _raise_for(answer, lock_timeout, "recording the pause")
    return pause_of(answer.get("before")), pause_of(answer.get("after")), hold_of(answer.get("held"))


def add_notes(executor: Executor, desired: DesiredState, records: list[dict[str, Any]]) -> None:
    """Append records to the host's history; waits a few seconds at most for the lock."""
    request = {
        "op": "note",
        "protocol": PROTOCOL,
        "state": desired.layout.state,
        "records": records,
        "lock_timeout": 5.0,
    }
    _raise_for(executor.request(request), 5.0, "writing to the host's history")


def _raise_for(answer: dict[str, Any], lock_timeout: float, doing: str) -> None:
    if answer.get("event") != "error":
        return
    if answer.get("code") == "locked":
        import json

        try:
            holder = json.loads(answer.get("detail") or "{}")
        except ValueError:
            holder = {}
        raise LockHeld(holder, lock_timeout)
    raise HostError(f"{doing} failed: {answer.get('error')}", hint=answer.get("detail") or None)


def release_sizes(executor: Executor, desired: DesiredState, runtime: str | None) -> dict[str, Any]:
    """What each release folder (and image) weighs on the host: a read-only request."""
    answer = executor.request(
        {
            "op": "releases",
            "protocol": PROTOCOL,
            "releases": desired.layout.releases,
            "state": desired.layout.state,
            "runtime": runtime,
        }
    )
    if answer.get("event") != "result":
        raise HostError(
            f"reading the releases failed: {answer.get('error')}", hint=answer.get("detail") or None
        )
    return dict(answer.get("releases") or {})
