"""What the numbers were measured on, and the lock that keeps timed runs from overlapping."""

from __future__ import annotations

import fcntl
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from tests.testhost import TestHost

LOCK_PATH = Path("/tmp/reconciler-bench.lock")


@contextmanager
def exclusive(enabled: bool = True, path: Path = LOCK_PATH) -> Iterator[None]:
    """Hold the benchmarks' lock: two timed runs sharing 2 CPUs would measure each other.

    When started as `flock LOCK python -m ...`, the lock is already ours (held by an ancestor);
    taking it again would wait for ourselves forever, so that case is recognised.
    """
    if not enabled:
        yield
        return
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if _held_by_ancestor(path):
                yield
                return
            print(f"waiting for {path} (another benchmark is running)", file=sys.stderr, flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ancestors() -> set[int]:
    pids, pid = set(), os.getppid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _held_by_ancestor(path: Path) -> bool:
    """/proc/locks names the holder's pid and the file's inode ("1: FLOCK ADVISORY WRITE pid
    maj:min:inode 0 EOF")."""
    inode = str(path.stat().st_ino)
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == inode:
            holders.add(int(fields[4]))
    return bool(holders & _ancestors())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _mem_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def code_version() -> str:
    """Which commit was measured, and whether the code under test had local changes."""
    repo = str(Path(__file__).resolve().parents[2])

    def git(*args: str) -> str:
        proc = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("log", "-1", "--format=%h %s")
    if not commit:
        return "code: not a git checkout"
    dirty = git(
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "reconciler",
        "tests",
        "examples",
        "pyproject.toml",
    )
    state = "with uncommitted changes in the code under test" if dirty else "clean"
    return f"code: commit {commit} ({state})"


def describe(host: TestHost | None = None) -> list[str]:
    """Bullet lines for a report: this machine, the software, the test host."""
    load = os.getloadavg()
    lines = [
        code_version(),
        f"{_cpu_model()}, {os.cpu_count()} CPUs (shared), {_mem_gib():.0f} GiB RAM, "
        f"Linux {platform.release()}; load average {load[0]:.2f} at the start",
        f"Python {sys.version.split()[0]}, paramiko {metadata.version('paramiko')}",
    ]
    if host is not None:
        caddy = host.exec(["caddy", "version"], check=False).stdout.split()[:1]
        python = host.exec(["python3", "--version"], check=False).stdout.strip()
        lines.append(
            f"test host: systemd-nspawn container (Debian 12, systemd, sshd, Caddy {' '.join(caddy)}, "
            f"{python}) at {host.address}, reached over a veth from this machine"
        )
    return lines
