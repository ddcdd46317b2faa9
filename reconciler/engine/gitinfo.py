"""Which commit of the desired-state file is being applied, for the host's history."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Revision:
    commit: str | None  # HEAD of the repository holding the file, None when not in git
    dirty: bool  # the file has changes that are not committed

    def describe(self) -> str:
        if self.commit is None:
            return "not in git"
        return self.commit[:12] + (" + uncommitted changes" if self.dirty else "")


def revision_of(file: Path) -> Revision:
    folder = file.resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if head.returncode != 0:
            return Revision(None, False)
        status = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--", file.resolve().name],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return Revision(None, False)
    return Revision(head.stdout.strip(), bool(status.stdout.strip()))
