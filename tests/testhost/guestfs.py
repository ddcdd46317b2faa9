"""Files inside a host, accessed from this machine through a directory that shows
the host's root (the overlay's merged dir before boot, /proc/<leader>/root after).

/proc/<leader>/root shows the container's own mounts (/run, /tmp, /share), which
the merged dir does not. Either way, absolute symlinks inside the host point at
paths of the *host*, so every path is resolved here component by component
against that root, never by the kernel against this machine's /.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import deque
from pathlib import Path, PurePosixPath

from tests.testhost.errors import TesthostError

#: (type, mode, sha256-or-link-target); None for dirs and special files.
EntryState = tuple[str, int, str | None]

_MAX_SYMLINKS = 40


def resolve(root: Path, path: str, *, follow_last: bool = True) -> Path:
    """Map an absolute path inside the host to a path on this machine under root."""
    pure = PurePosixPath(path)
    if not pure.is_absolute():
        raise TesthostError(f"paths inside the host must be absolute, not {path!r}")
    pending = deque(pure.parts[1:])
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()  # safe: everything in `resolved` is already symlink-free
            continue
        candidate = root.joinpath(*resolved, part)
        if (pending or follow_last) and candidate.is_symlink():
            hops += 1
            if hops > _MAX_SYMLINKS:
                raise TesthostError(f"too many levels of symbolic links in {path!r}")
            target = PurePosixPath(os.readlink(candidate))
            if target.is_absolute():
                resolved = []
                pending.extendleft(reversed(target.parts[1:]))
            else:
                pending.extendleft(reversed(target.parts))
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def read(root: Path, path: str) -> bytes | None:
    local = resolve(root, path)
    try:
        return local.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError as exc:
        raise TesthostError(f"{path} is a directory inside the host") from exc


def write(root: Path, path: str, data: bytes, mode: int = 0o644) -> None:
    """Write in place (like `cat > path`), creating parent directories, then set mode."""
    local = resolve(root, path)
    local.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _entry(local: Path, st: os.stat_result) -> EntryState:
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return ("symlink", mode, os.readlink(local))
    if stat.S_ISREG(st.st_mode):
        return ("file", mode, _sha256(local))
    if stat.S_ISDIR(st.st_mode):
        return ("dir", mode, None)
    kinds = {
        stat.S_IFIFO: "fifo",
        stat.S_IFSOCK: "socket",
        stat.S_IFCHR: "char",
        stat.S_IFBLK: "block",
    }
    return (kinds.get(stat.S_IFMT(st.st_mode), "other"), mode, None)


def tree_state(root: Path, paths: list[str]) -> dict[str, EntryState]:
    """Every file/dir/symlink at or below each path, keyed by its path inside the host.

    Symlinks are recorded, never followed (a link to a directory is one entry).
    Missing paths are simply absent from the result.
    """
    state: dict[str, EntryState] = {}
    for path in paths:
        top = resolve(root, path, follow_last=False)
        logical = "/" + str(PurePosixPath(path)).strip("/") if path.strip("/") else "/"
        try:
            st = top.lstat()
        except FileNotFoundError:
            continue
        state[logical] = _entry(top, st)
        if not stat.S_ISDIR(st.st_mode):
            continue
        stack = [(top, logical)]
        while stack:
            local_dir, logical_dir = stack.pop()
            with os.scandir(local_dir) as entries:
                for entry in entries:
                    local = Path(entry.path)
                    key = f"{logical_dir.rstrip('/')}/{entry.name}"
                    st = entry.stat(follow_symlinks=False)
                    state[key] = _entry(local, st)
                    if stat.S_ISDIR(st.st_mode):
                        stack.append((local, key))
    return state
