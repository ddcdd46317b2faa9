"""`reconcile exec`: one process run as release tasks run (transient.py), with the caller's
stdin, stdout and stderr attached: the SSH channel's (a terminal when the client asked for
one), or, for `target: local`, the reconciler's own. Its exit status is the command's, and
the host's history records who ran what, from which release, when, and how it ended; never
its output.

The caller's stdin belongs to the command, so this request does not travel on stdin like
the others: over SSH the agent comes as an argument (only the modules below, to keep it
short) and reads its request from there. A caller that goes away (the SSH connection cut,
Ctrl-C on the client) is noticed within a fraction of a second (a hangup signal, or the
other end of stdout closing), and the command's unit is stopped: nothing is left running.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from typing import Any

from .fsops import now
from .history import append_history
from .protocol import AgentError, Json, check_request
from .transient import transient_argv

# The modules a host needs to run this one (sent instead of the whole agent).
MODULES = ("attach", "fsops", "history", "protocol", "transient")
STOP_SECONDS = 10  # TimeoutStopSec of the command's unit: SIGTERM, then SIGKILL
EXIT_INTERRUPTED = 130
EXIT_HOST_ERROR = 125  # as `docker run`: the command did not start


def run(request: Json) -> int:
    """Run the command; return its exit status (130 when it was interrupted)."""
    check_request(request)
    unit = f"reconciler-exec-{request['app']}-{os.getpid()}"
    argv = transient_argv(
        request,
        unit,
        pty=bool(request["tty"]),
        extra=(f"--property=TimeoutStopSec={STOP_SECONDS}s",),
    )
    started = now()
    stop_why: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stop_why.append(f"{signal.Signals(signum).name} on the host")

    handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            proc = subprocess.Popen(argv, stdin=None if request["interactive"] else subprocess.DEVNULL)
        except FileNotFoundError:
            raise AgentError("systemd-run is not installed on the host", code="missing") from None
        code = _wait(proc, unit, stop_why)
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    record: Json = {
        "kind": "exec",
        "user": request["who"],
        "started": started,
        "finished": now(),
        "command": list(request["argv"]),
        "release": request["release"],
        "unit": unit,
        "exit": None if stop_why else code,
        "result": "interrupted" if stop_why else "ok" if code == 0 else "failed",
    }
    if stop_why:
        record["error"] = f"stopped: {stop_why[0]}"
    os.makedirs(request["state"], 0o700, exist_ok=True)
    # No trim here: that rewrites the file, which only runs holding the host lock may do.
    append_history(request["state"], record, trim=False)
    return EXIT_INTERRUPTED if stop_why else code


def _wait(proc: subprocess.Popen[bytes], unit: str, stop_why: list[str]) -> int:
    """Wait for systemd-run; stop the command's unit when the caller goes away (systemd-run
    itself may have ended on the same signal, leaving the unit running)."""
    watch = select.poll()
    watch.register(sys.stdout.fileno(), 0)  # 0: only hangups and errors are reported
    code: int | None = None
    while code is None and not stop_why:
        try:
            code = proc.wait(0.2)
        except subprocess.TimeoutExpired:
            if any(mask & (select.POLLHUP | select.POLLERR) for _, mask in watch.poll(0)):
                stop_why.append("the client went away")
    if stop_why:
        stop = ["systemctl", "stop", unit]
        subprocess.run(stop, capture_output=True, timeout=STOP_SECONDS + 20, check=False)
        try:
            code = proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    assert code is not None
    return code


def main(request: Json) -> None:
    """The entry point over SSH (see executors/bootstrap.py, attached_command)."""
    try:
        code = run(request)
    except AgentError as exc:
        sys.stderr.write(f"reconciler: {exc.message}\n")
        code = EXIT_HOST_ERROR
    sys.stdout.flush()
    sys.exit(code)
