"""Release folders: receiving an archive safely (every member checked before it is written,
the whole tree checked before it is renamed into place), and pruning old releases out of sight.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tarfile

from .contents import DIR_MODE, check_tree, file_mode, settle_modes
from .context import Context
from .fsops import atomic_symlink, atomic_write, fsync_dir, makedirs, now, owner_ids
from .protocol import CHUNK, AgentError, Json


class MemberCheck:
    """Decides, member by member, whether a release archive is safe to unpack.

    Refused: absolute paths, `..`, devices, fifos, hard links, symlinks whose text points
    outside the release, and any member below a symlink (the classic way to write through a
    link). Read as text one member at a time, links can still combine into a way out; that
    is caught on the extracted tree (contents.check_tree) before the release is used.
    """

    def __init__(self) -> None:
        self.links: set[str] = set()

    def __call__(self, member: tarfile.TarInfo) -> str:
        name = member.name
        while name.startswith("./"):
            name = name[2:]
        name = name.rstrip("/")
        if not name or name == ".":
            return "."
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or "\0" in name or "" in parts:
            raise self.refuse(member, "path leaves the release")
        if not (member.isfile() or member.isdir() or member.issym()):
            raise self.refuse(member, "only files, folders and symlinks are allowed")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in self.links:
                raise self.refuse(member, "lies below a symlink")
        if member.issym():
            target = member.linkname
            depth = len(parts) - 1
            for part in target.split("/"):
                if part in ("", "."):
                    continue
                depth = depth - 1 if part == ".." else depth + 1
                if depth < 0:
                    break
            if target.startswith("/") or depth < 0:
                raise self.refuse(member, f"symlink to {target!r} points outside the release")
            self.links.add(name)
        return name

    @staticmethod
    def refuse(member: tarfile.TarInfo, why: str) -> AgentError:
        return AgentError(f"refusing release archive: member {member.name!r}: {why}", code="hostile")


def extract_release(stream: IO[bytes], dest: str) -> tuple[int, int]:
    """Extract a tar stream into `dest` (which must not exist); returns (files, bytes).

    Group and other never get write access: folders are 0755, files 0755 or 0644.
    """
    os.mkdir(dest, DIR_MODE)
    check = MemberCheck()
    files = total = 0
    import tarfile

    # PEP 706's `data` filter where this Python has it (3.12; 3.9.17+, 3.10.12+, 3.11.4+): a
    # second opinion on each member, not the only one. Streamed, it judges a link by the
    # members extracted so far, so a link through one that comes later gets past it.
    data_filter = getattr(tarfile, "data_filter", None)
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            rel = check(member)
            if rel == ".":
                continue
            if data_filter is not None:
                try:
                    data_filter(member, dest)
                except tarfile.FilterError as exc:
                    raise check.refuse(member, str(exc)) from None
            path = os.path.join(dest, rel)
            if member.isdir():
                makedirs(path, DIR_MODE)
                os.chmod(path, DIR_MODE)
            elif member.issym():
                makedirs(os.path.dirname(path), DIR_MODE)
                os.symlink(member.linkname, path)
            else:
                makedirs(os.path.dirname(path), DIR_MODE)
                src = tar.extractfile(member)
                if src is None:  # pragma: no cover - isfile() members always have data
                    continue
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                os.chmod(path, file_mode(member.mode))
                files += 1
                total += member.size
    return files, total


def unpack_release(stream: IO[bytes], dest: str, version: str) -> tuple[int, int]:
    """What a release archive becomes before it may be used: extracted member by member, a
    single top folder flattened, then the tree as it lies on disk checked and its modes
    settled. The host does this in a staging folder; the controller, in a temporary one,
    before sending anything. Returns (files, bytes)."""
    files, total = extract_release(stream, dest)
    single_top_dir(dest, version)  # before the check: flattening moves what `..` reaches
    check_tree(dest)
    settle_modes(dest)
    return files, total


def single_top_dir(dest: str, version: str) -> None:
    """An archive holding only one folder named for the version (`app-1.4.2/`) means its contents."""
    entries = os.listdir(dest)
    if len(entries) == 1 and version in entries[0]:
        inner = os.path.join(dest, entries[0])
        if os.path.isdir(inner) and not os.path.islink(inner):
            tmp = dest + ".flatten"
            os.rename(inner, tmp)
            os.rmdir(dest)
            os.rename(tmp, dest)


class _HashingReader(io.RawIOBase):
    def __init__(self, raw: IO[bytes], limit: int, progress: Callable[[int], None]) -> None:
        self.raw = raw
        self.left = limit
        self.sha = hashlib.sha256()
        self.progress = progress
        self.seen = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self.left <= 0:
            return 0
        want = min(len(buf), self.left)
        data = self.raw.read(want)
        if not data:
            raise AgentError("the release upload ended early (connection lost?)", code="truncated")
        n = len(data)
        buf[:n] = data
        self.left -= n
        self.seen += n
        self.sha.update(data)
        self.progress(self.seen)
        return n

    def drain(self) -> None:
        while self.left > 0:
            self.readinto(bytearray(min(CHUNK, self.left)))


def receive_to_file(ctx: Context, size: int, path: str) -> str:
    """Save the payload to `path`, reporting progress; returns its sha256."""
    if ctx.payload is None:
        raise AgentError("no image archive was sent")
    last = [0.0]

    def progress(seen: int) -> None:
        now = time.monotonic()
        if now - last[0] > 0.5 or seen == size:
            last[0] = now
            ctx.emit({"event": "progress", "what": "upload", "done": seen, "total": size})

    reader = _HashingReader(ctx.payload, size, progress)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        while True:
            chunk = reader.read(CHUNK)
            if not chunk:
                break
            out.write(chunk)
    return reader.sha.hexdigest()


def do_upload_release(ctx: Context, a: Json) -> Json:
    releases, version = a["releases"], a["version"]
    dest = os.path.join(releases, version)
    if os.path.isdir(dest):
        raise AgentError(f"release {version} appeared on the host during this run; run again")
    if ctx.payload is None:
        raise AgentError("no release payload was sent")
    makedirs(releases)
    for name in os.listdir(releases):  # leftovers of interrupted uploads of this version
        if name.startswith(f".incoming-{version}-"):
            shutil.rmtree(os.path.join(releases, name), ignore_errors=True)
    staging = os.path.join(releases, f".incoming-{version}-{os.getpid()}")
    size = int(a["size"])
    last = [0.0]

    def progress(seen: int) -> None:
        now = time.monotonic()
        if now - last[0] > 0.5 or seen == size:
            last[0] = now
            ctx.emit({"event": "progress", "what": "upload", "done": seen, "total": size})

    reader = _HashingReader(ctx.payload, size, progress)
    try:
        files, total = unpack_release(io.BufferedReader(reader, CHUNK), staging, version)
        reader.drain()
        digest = reader.sha.hexdigest()
        if a.get("sha256") and digest != a["sha256"]:
            raise AgentError(f"release {version} arrived with sha256 {digest}, expected {a['sha256']}")
        fsync_dir(releases)
        meta = {
            "version": version,
            "sha256": a.get("sha256") or digest,
            "uploaded": now(),
            "files": files,
            "bytes": total,
        }
        atomic_write(
            os.path.join(ctx.state_dir, "releases", f"{version}.json"), json.dumps(meta).encode(), 0o644
        )
        os.rename(staging, dest)  # the release becomes visible only when complete
        fsync_dir(releases)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"files": files, "bytes": total}


def do_prune_release(ctx: Context, a: Json) -> Json:
    path = os.path.join(a["releases"], a["version"])
    if not os.path.isdir(path):
        return {}
    from .systemd import unit_state

    for unit in a.get("unless_running") or ():
        state = unit_state(unit)
        runs = state["environ"].get("RECONCILER_RELEASE") or os.path.basename(state.get("cwd") or "")
        if state["active"] in ("active", "reloading") and runs == a["version"]:
            return {"skipped": f"{unit} still runs it"}
    trash = os.path.join(a["releases"], f".trash-{a['version']}-{os.getpid()}")
    os.rename(path, trash)  # gone from view at once; the slow delete happens out of sight
    fsync_dir(a["releases"])
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(a["state"], "releases", f"{a['version']}.json"))
    shutil.rmtree(trash, ignore_errors=True)
    if a.get("image"):
        from .runtime import remove_image

        remove_image(a.get("runtime") or "podman", a["image"])
    return {}


def do_link_shared(ctx: Context, a: Json) -> Json:
    """<release>/<path> -> <shared>/<path>, for every shared path. A shared folder that does
    not exist yet starts as the release's own copy; later releases' copies are replaced by the
    link. The shared folders belong to the backend's user, who writes there."""
    release, shared = a["release"], a["shared"]
    linked = 0
    for rel in a["paths"]:
        inside, outside = os.path.join(release, rel), os.path.join(shared, rel)
        if os.path.islink(inside) and os.readlink(inside) == outside:
            continue
        if not os.path.isdir(outside):
            makedirs(os.path.dirname(outside))
            if os.path.isdir(inside) and not os.path.islink(inside):
                shutil.copytree(inside, outside, symlinks=True)
            else:
                makedirs(outside)
            if a.get("owner"):
                uid, gid = owner_ids(a["owner"], a["owner"])
                for root, dirs, files in os.walk(outside):
                    for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                        os.lchown(name, uid, gid)
        if os.path.lexists(inside):
            if os.path.isdir(inside) and not os.path.islink(inside):
                shutil.rmtree(inside)
            else:
                os.unlink(inside)
        makedirs(os.path.dirname(inside))
        atomic_symlink(inside, outside)
        linked += 1
    return {"linked": linked}


def do_make_shared(ctx: Context, a: Json) -> Json:
    """<shared>/<path> for an image's containers to bind: Podman refuses to bind a folder that
    does not exist, and Docker would make it root's. Made once, the backend user's as a
    release's shared folder is; one that exists is left as it is."""
    made = 0
    for rel in a["paths"]:
        outside = os.path.join(a["shared"], rel)
        if os.path.isdir(outside):
            continue
        makedirs(outside)
        if a.get("owner"):
            os.lchown(outside, *owner_ids(a["owner"], a["owner"]))
        made += 1
    return {"made": made}
