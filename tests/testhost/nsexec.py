"""Running a command inside a host with nsenter, and the one quirk that needs care.

nsenter --pid forks: the command runs as nsenter's child inside the host's PID
namespace while nsenter itself stays outside, waiting. util-linux's nsenter
waits with WUNTRACED and, when its child stops, stops *itself* with SIGSTOP and
only resumes the child once someone continues nsenter. When the host shuts down,
systemd-shutdown does kill(-1, SIGSTOP) ... kill(-1, SIGCONT) inside the host:
the child is stopped and continued, but nsenter, outside, stays stopped forever
and never reaps it. So while waiting we give a stopped nsenter a SIGCONT.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from tests.testhost import nspawn


def argv(leader: int, command: list[str]) -> list[str]:
    """Enter all namespaces of the host's PID 1 (user/time ns are skipped when equal)."""
    return [shutil.which("nsenter") or "nsenter", f"--target={leader}", "--all", "--", *command]


def start(
    leader: int, command: list[str], env: Mapping[str, str], *, with_input: bool
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv(leader, command),
        stdin=subprocess.PIPE if with_input else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        start_new_session=True,  # our Ctrl-C is handled by us, not delivered to it
    )


def _stopped(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Field 3, after the parenthesised command name (which may contain spaces).
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def communicate(proc: subprocess.Popen[bytes], input: bytes | None, timeout: float) -> tuple[bytes, bytes]:
    """proc.communicate() that un-stops nsenter and kills the whole tree on
    timeout or interruption. Raises subprocess.TimeoutExpired on timeout."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                # Input may be passed on the first call only: Popen keeps writing it on later
                # calls and raises ValueError if it is passed again.
                return proc.communicate(input, timeout=max(0.0, min(0.5, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                input = None
                if time.monotonic() >= deadline:
                    raise
                if _stopped(proc.pid):
                    os.kill(proc.pid, signal.SIGCONT)
    except BaseException:
        nspawn.kill_tree(proc.pid)
        proc.communicate()
        raise
