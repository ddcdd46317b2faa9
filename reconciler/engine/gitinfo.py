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


def head(file: Path) -> str | None:
    """The commit checked out in the repository holding `file`; None when not in git."""
    try:
        done = subprocess.run(
            ["git", "-C", str(file.resolve().parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def revision_of(file: Path) -> Revision:
    commit = head(file)
    if commit is None:
        return Revision(None, False)
    try:
        status = subprocess.run(
            ["git", "-C", str(file.resolve().parent), "status", "--porcelain", "--", file.resolve().name],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return Revision(None, False)
    return Revision(commit, bool(status.stdout.strip()))
