"""Helpers for tests of the day-two commands (`reconcile logs`, `exec`): their command lines,
as root or as a login with passwordless sudo, and a command read line by line while it runs."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

from tests.deploying import REPO, Project, Run
from tests.testhost import TestHost

LOGINS = ("root", "sudo")
SUDO_USER = "deploy"
MAKE_SUDO_USER = f"""
set -e
id -u {SUDO_USER} >/dev/null 2>&1 || useradd -m -s /bin/bash {SUDO_USER}
install -d -m 700 -o {SUDO_USER} -g {SUDO_USER} /home/{SUDO_USER}/.ssh
install -m 600 -o {SUDO_USER} -g {SUDO_USER} /root/.ssh/authorized_keys /home/{SUDO_USER}/.ssh/authorized_keys
echo '{SUDO_USER} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/{SUDO_USER}
chmod 440 /etc/sudoers.d/{SUDO_USER}
"""


def make_sudo_user(host: TestHost) -> None:
    """A login that is not root and may run anything through `sudo -n`."""
    host.exec(["bash", "-c", MAKE_SUDO_USER])


def command(
    project: Project,
    sub: str,
    *args: str,
    login: str = "root",
    transport: str = "paramiko",
    argv: Sequence[str] = (),
) -> list[str]:
    """`reconcile SUB ARGS` against the project's host, with long option names only (`logs`
    takes -f for --follow, `exec` -i for --interactive); `argv` is exec's command."""
    host = project.host
    out = [
        sys.executable, "-m", "reconciler", sub, *args,
        "--file", str(project.root / "desired-state.yaml"),
        "--identity", str(host.key_path),
        "--known-hosts", str(host.known_hosts),
        "--ssh", transport,
    ]  # fmt: skip
    if login == "sudo":
        out += ["--target", f"ssh://{SUDO_USER}@{host.address}:{host.ssh_port}"]
    return [*out, "--", *argv] if argv else out


def environment(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), **extra)


def run(
    argv: list[str], *, timeout: float = 120, stdin: str | None = None, env: dict[str, str] | None = None
) -> Run:
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=environment(**(env or {})), input=stdin,
        check=False,
    )  # fmt: skip
    return Run(proc.returncode, proc.stdout, proc.stderr)


class Running:
    """A command started in the background, its output lines collected as they come."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=environment(),
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        threading.Thread(target=lambda: [self.lines.put(line) for line in stdout], daemon=True).start()

    def wait_for(self, accept: Callable[[str], bool], timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if accept(line):
                return line
        ended = self.proc.poll()
        said = ""
        if ended is not None and self.proc.stderr is not None:
            said = self.proc.stderr.read()
        raise AssertionError(
            f"no such line within {timeout} s (exit: {ended}, stderr: {said!r}); saw: {self.seen[-20:]}"
        )

    def interrupt(self, timeout: float = 30) -> tuple[int, str]:
        """SIGINT (Ctrl-C) to the CLI alone; its exit status and what it said on stderr."""
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def until(check: Callable[[], bool], timeout: float = 30, interval: float = 0.1, what: str = "") -> float:
    """Poll `check` until it holds; returns how long that took (fails after `timeout`)."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"still not true after {timeout} s: {what or check}")
        time.sleep(interval)
    return time.monotonic() - t0


def processes(host: TestHost, name: str) -> list[str]:
    """The command lines of the host's processes named `name` (pgrep -a -x)."""
    found = host.exec(["pgrep", "-a", "-x", name], check=False)
    return found.stdout.splitlines()
