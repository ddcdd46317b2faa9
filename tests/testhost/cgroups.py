"""One cgroup subtree per host.

Started from the same cgroup, several nspawn containers would all put their
payload into the same <cgroup>/payload directory and their systemd instances
would manage one shared tree. Each host's nspawn is therefore started inside its
own <hierarchy>/reconciler-testhost/<name> in every hierarchy systemd uses: the
named v1 "systemd" hierarchy and the cgroup2 one (hybrid layout here), or just
the cgroup2 root on a unified machine.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from pathlib import Path

from tests.testhost.errors import TesthostError
from tests.testhost.layout import CGROUP_PARENT
from tests.testhost.mounts import mounts


def hierarchies() -> list[Path]:
    """Mount points of the hierarchies nspawn and systemd care about."""
    found: list[Path] = []
    for m in mounts():
        if (
            m.fstype == "cgroup2" or (m.fstype == "cgroup" and "name=systemd" in m.super_options.split(","))
        ) and m.mount_point not in found:
            found.append(m.mount_point)
    if not found:
        raise TesthostError("no cgroup2 or name=systemd cgroup hierarchy is mounted")
    return found


def parents() -> list[Path]:
    return [h / CGROUP_PARENT for h in hierarchies()]


def paths_for(name: str) -> list[Path]:
    return [p / name for p in parents()]


def create(name: str) -> list[Path]:
    paths = paths_for(name)
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
    return paths


def processes(paths: list[Path]) -> set[int]:
    """PIDs in the given cgroups and all their descendants."""
    pids: set[int] = set()
    for top in paths:
        if not top.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                try:
                    text = Path(dirpath, "cgroup.procs").read_text()
                except OSError:
                    continue  # removed while walking
                pids.update(int(p) for p in text.split())
    return pids


def kill_all(paths: list[Path], *, timeout: float = 5) -> None:
    """SIGKILL everything left in the subtree until it is empty."""
    deadline = time.monotonic() + timeout
    while pids := processes(paths):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise TesthostError(f"processes {sorted(pids)} survive SIGKILL in {paths}")
        time.sleep(0.05)


def remove(paths: list[Path], *, timeout: float = 5) -> None:
    """rmdir the subtrees bottom-up (cgroupfs only allows rmdir of empty groups)."""
    deadline = time.monotonic() + timeout
    for top in paths:
        while top.exists():
            dirs = sorted(
                (Path(d) for d, _subdirs, _files in os.walk(top)),
                key=lambda p: len(p.parts),
                reverse=True,
            )
            busy = False
            for d in dirs:
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise
                    busy = True
            if busy:
                if time.monotonic() > deadline:
                    raise TesthostError(f"cgroup {top} stays busy")
                time.sleep(0.05)


def remove_parents_if_empty() -> None:
    for parent in parents():
        with contextlib.suppress(OSError):  # absent, or another host still lives there
            parent.rmdir()
