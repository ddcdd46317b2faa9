"""Time one child process: wall time, exit code, peak RSS; standard library only.

Used on this machine (imported) and inside the test host (copied to /share and run with the
host's python3), so the local no-ops are timed where they run, without nsenter's cost:

    python3 hosttime.py [--cwd DIR] [--timeout S] [--env K=V ...] -- ARGV...   -> one JSON line

Peak RSS is the biggest single process of the run (the command or a descendant it waited
for: Linux merges their maxima), not a sum. It is taken by GNU time (`time -f %M`) spawning
the command, not by wait4() here: at exec, Linux keeps the RSS high-water mark of the process
that forked the child, so a child of this 45 MB Python process would never report less than
45 MB. Without GNU time, wait4() is used and `rss_from` says so.

Output goes to temporary files, not pipes: an ssh ControlPersist master (Ansible) keeps
inherited descriptors open for a minute, and a pipe would make us wait for it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

TAIL = 4000  # characters of stdout/stderr kept: enough to read a recap or an error
GNU_TIME = "/usr/bin/time"


def _tail(fh: Any, keep: int | None) -> str:
    fh.seek(0)
    text: str = fh.read().decode("utf-8", "replace")
    return text if keep is None else text[-keep:]


def run_timed(
    argv: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    timeout: float = 600.0,
    keep: int | None = TAIL,
    rss_via: str | None = GNU_TIME,
) -> dict[str, Any]:
    """Run argv to completion; return wall_s, rc, maxrss_kb, rss_from, stdout, stderr (the
    last `keep` characters; None: all), timed_out. `rss_via`: GNU time's path, or None."""
    use_time = rss_via is not None and os.access(rss_via, os.X_OK)
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile() as rss,
    ):
        if use_time:
            argv = [str(rss_via), "-f", "%M", "-o", rss.name, "--", *argv]
        timed_out = threading.Event()
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True
        )

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            # wait4, not Popen.wait: only wait4 returns the rusage of this one child.
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        maxrss, rss_from = int(usage.ru_maxrss), "wait4 (includes the spawner's RSS)"
        if use_time:
            # GNU time writes "Command exited with non-zero status N" first when rc != 0.
            lines = rss.read().decode(errors="replace").split()
            if lines and lines[-1].isdigit():
                maxrss, rss_from = int(lines[-1]), "GNU time"
        return {
            "wall_s": wall,
            "rc": proc.returncode,
            "maxrss_kb": maxrss,
            "rss_from": rss_from,
            "user_s": usage.ru_utime,
            "sys_s": usage.ru_stime,
            "stdout": _tail(out, keep),
            "stderr": _tail(err, keep),
            "timed_out": timed_out.is_set(),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cwd")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--env", action="append", default=[], metavar="K=V")
    parser.add_argument("--rss-via", default=GNU_TIME, help="GNU time binary (default %(default)s)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    env = dict(os.environ)
    env.update(item.split("=", 1) for item in args.env)
    result = run_timed(command, env=env, cwd=args.cwd, timeout=args.timeout, rss_via=args.rss_via)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
