"""Overlay mounts and reading /proc/self/mountinfo.

mountinfo, not `mountpoint`, is the source of truth: it also shows mounts *below*
a directory, which is what guards every recursive delete of a state dir.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tests.testhost.commands import run
from tests.testhost.errors import TesthostError


@dataclass(frozen=True)
class Mount:
    mount_point: Path
    fstype: str
    source: str
    super_options: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mounts() -> list[Mount]:
    """Mounts visible in this process's mount namespace, in mount order."""
    result: list[Mount] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        fstype, source, super_options = (right.split() + ["", "", ""])[:3]
        result.append(Mount(Path(_unescape(fields[4])), fstype, _unescape(source), super_options))
    return result


def mounts_under(path: Path) -> list[Mount]:
    """Mounts at path or anywhere below it, deepest first (the order to unmount)."""
    found = [m for m in mounts() if m.mount_point == path or path in m.mount_point.parents]
    return sorted(found, key=lambda m: len(m.mount_point.parts), reverse=True)


def lowerdirs_in_use() -> set[Path]:
    """Lower dirs of all overlay mounts: a cached rootfs listed here must not be deleted."""
    used: set[Path] = set()
    for m in mounts():
        if m.fstype != "overlay":
            continue
        for option in m.super_options.split(","):
            if option.startswith("lowerdir="):
                used.update(Path(p) for p in option[len("lowerdir=") :].split(":") if p)
    return used


def mount_overlay(lower: Path, upper: Path, work: Path, merged: Path) -> None:
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    try:
        run(["mount", "-t", "overlay", "overlay", "-o", options, merged], timeout=30)
    except TesthostError as exc:
        # The kernel loads the overlay module on demand; if that is impossible
        # (e.g. inside another container) the mount error alone is cryptic.
        raise TesthostError(f"{exc}\n(is overlayfs available? try `modprobe overlay`)") from exc


def unmount_all_under(path: Path, *, timeout: float = 10) -> None:
    """Unmount everything at or below path, retrying while it is briefly busy.

    A lazy unmount is the last resort: it detaches the mount from the tree so a
    later recursive delete of the state dir can no longer reach into it.
    """
    deadline = time.monotonic() + timeout
    while True:
        remaining = mounts_under(path)
        if not remaining:
            return
        for m in remaining:
            run(["umount", m.mount_point], check=False, timeout=30)
        if not mounts_under(path):
            return
        if time.monotonic() > deadline:
            for m in mounts_under(path):
                run(["umount", "--lazy", m.mount_point], check=False, timeout=30)
            if mounts_under(path):
                left = ", ".join(str(m.mount_point) for m in mounts_under(path))
                raise TesthostError(f"could not unmount {left}")
            return
        time.sleep(0.1)
