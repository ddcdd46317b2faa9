"""`reconcile logs`: the journal of the app's units, read with journalctl on the host and
sent back line by line as it comes, so nothing holds a whole journal in memory and `-f`
shows a line as soon as journald has it.

journalctl stops when the client goes: the agent notices its stdin closing (or a write to
the client failing) within a fraction of a second, and ends journalctl before it exits, so
following leaves no process behind on the host.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
from collections.abc import Callable

from .protocol import AgentError, Emit, Json, check_request

# What a text line is made of; --json asks for every field journald has.
TEXT_FIELDS = (
    "MESSAGE",
    "_SYSTEMD_UNIT",
    "UNIT",
    "OBJECT_SYSTEMD_UNIT",
    "_PID",
    "SYSLOG_IDENTIFIER",
    "PRIORITY",
)
POLL_SECONDS = 0.2
MAX_STDERR = 4096
JOURNAL_SOCKET = "/run/systemd/journal/socket"
MAX_LINE = 16 << 10


def journalctl_argv(request: Json) -> list[str]:
    argv = ["journalctl", "--no-pager", "--quiet", "--output=json"]
    if not request.get("all_fields"):
        argv.append("--output-fields=" + ",".join(TEXT_FIELDS))
    if request.get("follow"):
        argv.append("--follow")
    if request.get("lines") is not None:
        argv.append(f"--lines={int(request['lines'])}")
    if request.get("since"):
        argv.append(f"--since={request['since']}")
    for unit in request["units"]:
        argv.append(f"--unit={unit}")
    return argv


def logs(request: Json, emit: Emit, cancelled: Callable[[], bool]) -> Json:
    check_request(request)
    try:
        proc = subprocess.Popen(
            journalctl_argv(request), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except FileNotFoundError:
        raise AgentError("journalctl is not installed on the host", code="missing") from None
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.fileno(), proc.stderr.fileno()
    pending = b""
    errors = b""
    sent = 0
    finished = False
    try:
        open_fds = [out, err]
        while open_fds:
            if cancelled():
                break
            ready, _, _ = select.select(open_fds, [], [], POLL_SECONDS)
            for fd in ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    open_fds.remove(fd)
                elif fd == err:
                    errors = (errors + chunk)[-MAX_STDERR:]
                else:
                    lines = (pending + chunk).split(b"\n")
                    pending = lines.pop()
                    for line in lines:
                        if line:
                            emit({"event": "log", "line": line.decode("utf-8", "replace")})
                            sent += 1
        finished = not open_fds
    finally:
        _stop(proc, finished)
    if cancelled():
        return {"event": "result", "ok": True, "lines": sent, "stopped": True}
    if pending:
        emit({"event": "log", "line": pending.decode("utf-8", "replace")})
        sent += 1
    if proc.returncode not in (0, None):
        problem = errors.decode("utf-8", "replace").strip() or f"exit status {proc.returncode}"
        raise AgentError(f"journalctl failed: {problem}", code="journal")
    return {"event": "result", "ok": True, "lines": sent}


def _stop(proc: subprocess.Popen[bytes], finished: bool) -> None:
    """Wait for a journalctl that closed its output; end one that is still reading."""
    if not finished:
        proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def to_journal(unit: str, identifier: str, text: str, failed: bool = False) -> None:
    """A finished command's output into the journal as lines about `unit`, so `journalctl -u`
    (and `reconcile logs tasks`) shows them: a task runs with its output piped back to the agent
    (--pipe), which leaves the journal with only systemd's own lines about the unit. journald
    files a line from root that names OBJECT_SYSTEMD_UNIT under that unit. Best effort: a host
    without journald loses nothing else."""
    fields = [
        f"OBJECT_SYSTEMD_UNIT={unit}",
        f"SYSLOG_IDENTIFIER={identifier}",
        f"PRIORITY={3 if failed else 6}",
    ]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        for line in text.splitlines():
            if line.strip():
                message = line[:MAX_LINE].replace("\r", "")
                sock.sendto("\n".join([f"MESSAGE={message}", *fields, ""]).encode(), JOURNAL_SOCKET)
