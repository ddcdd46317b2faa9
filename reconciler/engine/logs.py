"""`reconcile logs`: which units' journal to read, and reading it from one host or several at
once, each line handed on as it arrives.

Each host is read over its own connection by its own thread; the lines of several hosts
interleave in the order they arrive. Ctrl-C closes every connection, which the agents on the
hosts notice: their journalctl ends with them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from reconciler.agent.protocol import PROTOCOL
from reconciler.errors import HostError, ReconcilerError
from reconciler.executors.base import Executor
from reconciler.spec.model import DesiredState, HostSpec

KINDS = ("backend", "frontend", "tasks", "blue", "green")
DEFAULT_LINES = 100  # without --since or -n, as `kamal app logs`


def units_for(desired: DesiredState, kinds: Sequence[str]) -> list[str]:
    """The units (or unit patterns) whose journal `kinds` mean; all of the app's by default.
    `backend` is the backend whatever the strategy: its one unit and both colours."""
    app = desired.app
    names = {
        "backend": [desired.backend_unit, desired.colour_unit("blue"), desired.colour_unit("green")],
        "frontend": [desired.frontend_unit],
        "tasks": [f"reconciler-task-{app}-*"],  # the release tasks' transient units
        "blue": [desired.colour_unit("blue")],
        "green": [desired.colour_unit("green")],
    }
    out: list[str] = []
    for kind in kinds or ("backend", "frontend", "tasks"):
        out += [u for u in names[kind] if u not in out]
    return out


def logs_request(
    desired: DesiredState,
    kinds: Sequence[str],
    *,
    follow: bool,
    lines: int | None,
    since: str | None,
    all_fields: bool,
) -> dict[str, Any]:
    if lines is None and since is None:
        lines = DEFAULT_LINES
    return {
        "op": "logs",
        "protocol": PROTOCOL,
        "units": units_for(desired, kinds),
        "follow": follow,
        "lines": lines,
        "since": since,
        "all_fields": all_fields,
    }


def read(executor: Executor, request: dict[str, Any], on_line: Callable[[str], None]) -> int:
    """Stream one host's journal into `on_line`; returns how many lines came."""

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "log":
            on_line(str(event.get("line", "")))

    answer = executor.request(request, on_event=on_event)
    if answer.get("event") == "error":
        error = str(answer.get("error"))
        hint = None
        if request.get("since") and "timestamp" in error:
            hint = (
                f"--since {request['since']!r} is read by journalctl on the host: give a time such as "
                '"2024-05-01 12:00", "today", "yesterday" or "10 min ago"'
            )
        raise HostError(f"reading the journal on {executor.description} failed: {error}", hint=hint)
    return int(answer.get("lines") or 0)


def read_hosts(
    hosts: Sequence[tuple[HostSpec, Executor]],
    request: dict[str, Any],
    on_line: Callable[[HostSpec, str], None],
) -> dict[str, ReconcilerError | None]:
    """Every host's journal at once, each in its own thread; returns each host's error (None:
    read to the end, or followed until interrupted). Ctrl-C closes every connection."""
    errors: dict[str, ReconcilerError | None] = {}

    def one(host: HostSpec, executor: Executor) -> None:
        try:
            read(executor, request, lambda line: on_line(host, line))
            errors[host.name] = None
        except ReconcilerError as exc:
            errors[host.name] = exc

    threads = [threading.Thread(target=one, args=pair, daemon=True) for pair in hosts]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():  # a join with a timeout lets Ctrl-C through
                thread.join(0.2)
    finally:
        for _, executor in hosts:
            executor.cancel()  # a remote agent reads it on stdin; an in-process one sees the flag
            executor.close()  # over SSH: the agents see their stdin close
        for thread in threads:
            thread.join(5)  # an in-process agent ends its journalctl before this process exits
    return errors
