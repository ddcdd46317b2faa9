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


@dataclass(frozen=True)
class Introduced:
    commit: str
    subject: str


def introduced(file: Path, version: str, limit: int = 200) -> Introduced | None:
    """The commit that made the desired-state file name `version`: the oldest of the newest
    commits (of those that touched the file) whose file names it, walking back from HEAD.
    What `git revert` undoes to make a rollback permanent; None when git cannot say."""
    import yaml

    folder = file.resolve().parent
    name = file.resolve().name
    try:
        log = subprocess.run(
            ["git", "-C", str(folder), "log", f"-n{limit}", "--format=%H%x09%s", "--", name],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if log.returncode != 0:
        return None
    found: Introduced | None = None
    for line in log.stdout.splitlines():
        commit, _, subject = line.partition("\t")
        try:
            shown = subprocess.run(
                ["git", "-C", str(folder), "show", f"{commit}:./{name}"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            # Every scalar as text: versions are read verbatim ("1.10" is not 1.1).
            data = yaml.load(shown.stdout, Loader=yaml.BaseLoader) if shown.returncode == 0 else None  # noqa: S506
        except (OSError, subprocess.TimeoutExpired, yaml.YAMLError):
            return found
        release = data.get("release") if isinstance(data, dict) else None
        named = str(release.get("version")) if isinstance(release, dict) else None
        if named != version:
            return found
        found = Introduced(commit, subject)
    return found
