"""A release folder as it lies on disk: checked and given its modes before it is renamed into
place, whether it came from an archive or out of a container image.

Links are judged on the real tree, not as text: links that each look harmless can combine
(`d -> .` used as `d/d/d/../../..`) into a path out of the release, and Caddy's file_server
follows links. So every link is resolved with os.path.realpath against what was extracted.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from .protocol import AgentError

DIR_MODE = 0o755  # Caddy and a backend.user read the release; only root writes it


def file_mode(mode: int) -> int:
    """0755 for a file its owner may run, 0644 for any other: no group or other write, no
    setuid, setgid or sticky bit, whatever the archive or image said."""
    return 0o755 if mode & 0o100 else 0o644


def refuse(rel: str, why: str) -> AgentError:
    return AgentError(f"refusing release: {rel!r}: {why}", code="hostile")


def _raise(exc: OSError) -> None:
    raise exc  # os.walk would skip what it cannot read; a release must be seen whole


def entries(root: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """(path, path relative to root, lstat) of everything below root; links are not followed."""
    for folder, dirs, files in os.walk(root, onerror=_raise):
        for name in sorted(dirs + files):
            path = os.path.join(folder, name)
            yield path, os.path.relpath(path, root), os.lstat(path)


def check_tree(root: str) -> None:
    """Refuse a release holding anything but folders, files and links resolving inside it.

    A link that does not resolve (its target missing) is refused only when that missing
    place is outside the release: a broken link inside it reaches nothing.
    """
    top = os.path.realpath(root)
    for path, rel, st in entries(root):
        if stat.S_ISLNK(st.st_mode):
            where = os.path.realpath(path)
            if where != top and not where.startswith(top + os.sep):
                target = os.readlink(path)
                raise refuse(rel, f"symlink to {target!r} resolves outside the release (to {where})")
        elif not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            raise refuse(rel, "only files, folders and symlinks are allowed")


def settle_modes(root: str) -> None:
    """Every folder 0755, every file 0755 or 0644 (see file_mode); links have no mode."""
    os.chmod(root, DIR_MODE)
    for path, _, st in entries(root):
        if stat.S_ISDIR(st.st_mode):
            os.chmod(path, DIR_MODE)
        elif stat.S_ISREG(st.st_mode):
            os.chmod(path, file_mode(st.st_mode))
