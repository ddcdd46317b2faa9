"""File operations the agent builds everything on: argv-only subprocesses, atomic writes and
symlinks (readers see old or new, never half), and tolerant readers for observation.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pwd
import stat
import subprocess
import time
from typing import Any

from .protocol import AgentError, Json


def run(
    argv: list[str], timeout: float = 120, input_: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(argv, input=input_, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise AgentError(f"{argv[0]} is not installed on the host", code="missing") from None
    except subprocess.TimeoutExpired:
        raise AgentError(f"{' '.join(argv)} did not finish within {timeout:.0f}s") from None


def decode(data: bytes) -> str:
    return data.decode("utf-8", "replace").strip()


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs(path: str, mode: int = 0o755) -> None:
    os.makedirs(path, mode=mode, exist_ok=True)


def owner_ids(owner: str | None, group: str | None) -> tuple[int, int]:
    uid = pwd.getpwnam(owner).pw_uid if owner else -1
    if group:
        import grp

        gid = grp.getgrnam(group).gr_gid
    else:
        gid = -1
    return uid, gid


def account(name: str) -> Json | None:
    """A user as the planner needs to know it: None if there is none of that name, else its
    uid, its primary gid (what a container of it runs as) and whether a group of the same name
    exists (the environment file is given to it)."""
    import grp

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    try:
        grp.getgrnam(name)
    except KeyError:
        return {"uid": entry.pw_uid, "gid": entry.pw_gid, "group": False}
    return {"uid": entry.pw_uid, "gid": entry.pw_gid, "group": True}


def state_folder(path: str, user: str | None) -> None:
    """`path` made as systemd's StateDirectory= makes it for a service of `user` (root when
    None): created 0755 if missing, its mode set to 0755, and the whole tree handed to the
    user's uid and primary gid when the folder itself is not theirs (systemd's own test, so a
    database written while the service ran as root changes hands once). Links are not
    followed."""
    if user:
        entry = pwd.getpwnam(user)
        uid, gid = entry.pw_uid, entry.pw_gid
    else:
        uid, gid = 0, 0
    makedirs(path)
    os.chmod(path, 0o755)
    have = os.lstat(path)
    if (have.st_uid, have.st_gid) == (uid, gid):
        return
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.lchown(name, uid, gid)


def atomic_write(
    path: str, data: bytes, mode: int, owner: str | None = None, group: str | None = None
) -> None:
    """Write via a temp file in the same folder, fsync, rename: readers see old or new, never half."""
    folder = os.path.dirname(path) or "."
    makedirs(folder)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)  # umask does not apply to what we promise
            if owner or group:
                uid, gid = owner_ids(owner, group)
                os.fchown(fh.fileno(), uid, gid)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def atomic_symlink(path: str, target: str) -> None:
    """Point `path` at `target` by renaming a new link over the old one (never a moment without)."""
    if os.path.isdir(path) and not os.path.islink(path):
        raise AgentError(f"{path} is a real directory, not a symlink; move it away and run again")
    folder = os.path.dirname(path)
    makedirs(folder)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, path)
    fsync_dir(folder)


def read_file(path: str) -> Json | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return {"kind": "symlink", "target": os.readlink(path)}
        raise
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            return {"kind": "other", "mode": st.st_mode}
        data = fh.read(4 * 1024 * 1024)
    return {
        "kind": "file",
        "content": data.decode("utf-8", "surrogateescape"),
        "sha256": hashlib.sha256(data).hexdigest(),
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def read_link(path: str) -> Json | None:
    try:
        target = os.readlink(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # exists but is not a symlink
            return {"kind": "dir" if os.path.isdir(path) else "file"}
        raise
    return {"kind": "symlink", "target": target, "resolves": os.path.exists(path)}


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except ValueError:
        return {"unreadable": True}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
