"""The part of the reconciler that runs on the host. Standard library only, one file,
Python 3.9 or newer (it runs on the host's own python3).

Over SSH this file is sent on stdin of a single `python3` exec, followed by one JSON request
line and an optional payload (a release tarball). It answers with JSON lines on stdout. So a
whole observation is one round trip, and a whole apply (lock, actions, history, the second
observation that verifies it) is one more. For `target: local` the same functions are called
in-process.

Nothing here builds a shell command: every program runs from an argv list, and file contents
are written as bytes. The request is data, interpreted by the handlers below.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: observing (the common case) needs neither
    import tarfile

Json = dict[str, Any]
Emit = Callable[[Json], None]

PROTOCOL = 1
UNIT_PROPS = (
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "NeedDaemonReload",
    "MainPID",
    "FragmentPath",
)
ENV_PREFIX = "RECONCILER_"
CHUNK = 1 << 16


class AgentError(Exception):
    """An action failed; `detail` carries what the host said (journal lines, caddy output)."""

    def __init__(self, message: str, detail: str = "", code: str = "failed") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.code = code


# --- small helpers ----------------------------------------------------------------------


def _run(
    argv: list[str], timeout: float = 120, input_: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(argv, input=input_, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise AgentError(f"{argv[0]} is not installed on the host", code="missing") from None
    except subprocess.TimeoutExpired:
        raise AgentError(f"{' '.join(argv)} did not finish within {timeout:.0f}s") from None


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").strip()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs(path: str, mode: int = 0o755) -> None:
    os.makedirs(path, mode=mode, exist_ok=True)


def _owner_ids(owner: str | None, group: str | None) -> tuple[int, int]:
    uid = pwd.getpwnam(owner).pw_uid if owner else -1
    if group:
        import grp

        gid = grp.getgrnam(group).gr_gid
    else:
        gid = -1
    return uid, gid


def atomic_write(
    path: str, data: bytes, mode: int, owner: str | None = None, group: str | None = None
) -> None:
    """Write via a temp file in the same folder, fsync, rename: readers see old or new, never half."""
    folder = os.path.dirname(path) or "."
    _makedirs(folder)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)  # umask does not apply to what we promise
            if owner or group:
                uid, gid = _owner_ids(owner, group)
                os.fchown(fh.fileno(), uid, gid)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def atomic_symlink(path: str, target: str) -> None:
    """Point `path` at `target` by renaming a new link over the old one (never a moment without)."""
    if os.path.isdir(path) and not os.path.islink(path):
        raise AgentError(f"{path} is a real directory, not a symlink; move it away and run again")
    folder = os.path.dirname(path)
    _makedirs(folder)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, path)
    _fsync_dir(folder)


# --- observation ------------------------------------------------------------------------


def _read_file(path: str) -> Json | None:
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


def _read_link(path: str) -> Json | None:
    try:
        target = os.readlink(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # exists but is not a symlink
            return {"kind": "dir" if os.path.isdir(path) else "file"}
        raise
    return {"kind": "symlink", "target": target, "resolves": os.path.exists(path)}


def _systemctl_show(units: list[str]) -> dict[str, Json]:
    if not units:
        return {}
    proc = _run(["systemctl", "show", "--no-pager", "-p", ",".join(UNIT_PROPS), "--", *units], timeout=30)
    if proc.returncode != 0:
        raise AgentError("systemctl show failed", _text(proc.stderr), code="systemd")
    blocks = _text(proc.stdout).split("\n\n")
    out: dict[str, Json] = {}
    for unit, block in zip(units, blocks):  # noqa: B905 - strict= needs Python 3.10
        props: Json = {}
        for line in block.splitlines():
            key, _, value = line.partition("=")
            props[key] = value
        pid = int(props.get("MainPID") or 0)
        info: Json = {
            "load": props.get("LoadState", ""),
            "active": props.get("ActiveState", ""),
            "sub": props.get("SubState", ""),
            "enabled": props.get("UnitFileState", ""),
            "need_daemon_reload": props.get("NeedDaemonReload") == "yes",
            "main_pid": pid,
            "fragment": props.get("FragmentPath", ""),
            "cwd": None,
            "environ": {},
        }
        if pid > 0:
            info.update(_process_facts(pid))
        out[unit] = info
    return out


def _markers(pid: int) -> Json:
    out: Json = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/environ", "rb") as fh:
        for item in fh.read().split(b"\0"):
            key, _, value = item.partition(b"=")
            name = key.decode("ascii", "replace")
            if name.startswith(ENV_PREFIX):
                out[name] = value.decode("utf-8", "replace")
    return out


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
            return [int(x) for x in fh.read().split()]
    except (OSError, ValueError):
        return []


def _process_facts(pid: int) -> Json:
    """What the running process really uses: its working directory and our markers in its env.

    A container's main PID is conmon, whose environment is not the container's: then the
    markers are read from the first descendant that has them (the container's init), and the
    working directory, which is inside the container, is not reported."""
    facts: Json = {"cwd": None, "environ": _markers(pid)}
    if facts["environ"]:
        with contextlib.suppress(OSError):
            facts["cwd"] = os.readlink(f"/proc/{pid}/cwd")
        return facts
    queue = _children(pid)
    for _ in range(16):  # a short, bounded search: conmon -> init -> app
        if not queue:
            break
        child = queue.pop(0)
        found = _markers(child)
        if found:
            facts["environ"] = found
            return facts
        queue += _children(child)
    with contextlib.suppress(OSError):
        facts["cwd"] = os.readlink(f"/proc/{pid}/cwd")
    return facts


def _images(wanted: bool) -> list[str]:
    if not wanted or not shutil.which("podman"):
        return []
    proc = _run(["podman", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], timeout=60)
    return sorted(set(_text(proc.stdout).split())) if proc.returncode == 0 else []


def _lock_state(state_dir: str) -> Json:
    path = os.path.join(state_dir, "lock")
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return {"held": False}
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return {"held": True, "holder": _read_holder(path)}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return {"held": False}
    finally:
        os.close(fd)


def _read_holder(path: str) -> Json:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _snapshots(state_dir: str) -> list[str]:
    try:
        names = os.listdir(os.path.join(state_dir, "snapshots"))
    except FileNotFoundError:
        return []
    return sorted(n[: -len(".sqlite")] for n in names if n.endswith(".sqlite") and not n.startswith("."))


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except ValueError:
        return {"unreadable": True}


def _releases(releases_dir: str, state_dir: str) -> Json:
    try:
        names = sorted(n for n in os.listdir(releases_dir) if not n.startswith("."))
    except FileNotFoundError:
        return {}
    out: Json = {}
    for name in names:
        full = os.path.join(releases_dir, name)
        if os.path.isdir(full) and not os.path.islink(full):
            out[name] = {"meta": _read_json(os.path.join(state_dir, "releases", f"{name}.json"))}
    return out


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def observe(spec: Json) -> Json:
    """One snapshot of everything the planner needs. Reads only; never writes."""
    state_dir = spec["state"]
    snap: Json = {
        "protocol": PROTOCOL,
        "host": {
            "hostname": socket.gethostname(),
            "python": "%d.%d.%d" % sys.version_info[:3],
            "uid": os.getuid(),
            "user": _user_name(os.getuid()),
        },
        "files": {p: _read_file(p) for p in spec.get("files", [])},
        "links": {p: _read_link(p) for p in spec.get("links", [])},
        "releases": _releases(spec["releases"], state_dir),
        "units": _systemctl_show(list(spec.get("units", []))),
        "which": {name: shutil.which(name) for name in spec.get("commands", [])},
        "state": {
            "caddy_loaded": _read_json(os.path.join(state_dir, "caddy-loaded.json")),
            "quarantine": _read_json(os.path.join(state_dir, "quarantine.json")) or {},
            "snapshots": _snapshots(state_dir),
        },
        "lock": _lock_state(state_dir),
        "images": _images(bool(spec.get("images"))),
    }
    snap["fingerprint"] = fingerprint(snap)
    return snap


def fingerprint(snap: Json) -> str:
    """Identity of an observation, ignoring the lock (our own apply holds it when checking)."""
    relevant = {k: v for k, v in snap.items() if k not in ("lock", "host", "fingerprint")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


# --- the lock ---------------------------------------------------------------------------


class HostLock:
    """flock on <state>/lock: the kernel frees it when the holder dies, so no stale locks."""

    def __init__(self, state_dir: str, holder: Json, timeout: float, emit: Emit) -> None:
        self.path = os.path.join(state_dir, "lock")
        self.holder = holder
        self.timeout = timeout
        self.emit = emit
        self.fd = -1

    def __enter__(self) -> HostLock:
        _makedirs(os.path.dirname(self.path), 0o700)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        start = time.monotonic()
        announced = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= self.timeout:
                    holder = _read_holder(self.path)
                    os.close(self.fd)
                    raise AgentError("lock held", json.dumps(holder), code="locked") from None
                if not announced:
                    self.emit({"event": "lock_wait", "holder": _read_holder(self.path)})
                    announced = True
                time.sleep(min(0.2, max(0.0, self.timeout - waited)))
        os.ftruncate(self.fd, 0)
        info = dict(self.holder, pid=os.getpid(), since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        os.pwrite(self.fd, json.dumps(info).encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing releases the flock


# --- release upload -----------------------------------------------------------------------


class MemberCheck:
    """Decides, member by member, whether a release archive is safe to unpack.

    Refused: absolute paths, `..`, devices, fifos, hard links, symlinks that point outside
    the release, and any member below a symlink (the classic way to write through a link).
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


def check_tar(fileobj: IO[bytes]) -> int:
    """Refuse a tarball with any hostile member before anything is written; count members."""
    check = MemberCheck()
    count = 0
    import tarfile

    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            check(member)
            count += 1
    return count


def extract_release(stream: IO[bytes], dest: str) -> tuple[int, int]:
    """Extract a tar stream into `dest` (which must not exist); returns (files, bytes)."""
    os.mkdir(dest, 0o755)
    check = MemberCheck()
    files = total = 0
    import tarfile

    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            rel = check(member)
            if rel == ".":
                continue
            path = os.path.join(dest, rel)
            if member.isdir():
                _makedirs(path)
                os.chmod(path, (member.mode & 0o777) | 0o700)
            elif member.issym():
                _makedirs(os.path.dirname(path))
                os.symlink(member.linkname, path)
            else:
                _makedirs(os.path.dirname(path))
                src = tar.extractfile(member)
                if src is None:  # pragma: no cover - isfile() members always have data
                    continue
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                os.chmod(path, (member.mode & 0o755) | 0o644)
                files += 1
                total += member.size
    return files, total


def _single_top_dir(dest: str, version: str) -> None:
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


# --- actions ------------------------------------------------------------------------------


class Context:
    def __init__(self, request: Json, payload: IO[bytes] | None, emit: Emit) -> None:
        self.request = request
        self.payload = payload
        self.emit = emit
        self.state_dir: str = request["observe"]["state"]
        self.caddy_backup: bytes | None = None


def do_upload_release(ctx: Context, a: Json) -> Json:
    releases, version = a["releases"], a["version"]
    dest = os.path.join(releases, version)
    if os.path.isdir(dest):
        raise AgentError(f"release {version} appeared on the host during this run; run again")
    if ctx.payload is None:
        raise AgentError("no release payload was sent")
    _makedirs(releases)
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
        files, total = extract_release(io.BufferedReader(reader, CHUNK), staging)
        reader.drain()
        digest = reader.sha.hexdigest()
        if a.get("sha256") and digest != a["sha256"]:
            raise AgentError(f"release {version} arrived with sha256 {digest}, expected {a['sha256']}")
        _single_top_dir(staging, version)
        os.chmod(staging, 0o755)
        _fsync_dir(releases)
        meta = {
            "version": version,
            "sha256": a.get("sha256") or digest,
            "uploaded": _now(),
            "files": files,
            "bytes": total,
        }
        atomic_write(
            os.path.join(ctx.state_dir, "releases", f"{version}.json"), json.dumps(meta).encode(), 0o644
        )
        os.rename(staging, dest)  # the release becomes visible only when complete
        _fsync_dir(releases)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"files": files, "bytes": total}


def _podman(*args: str, timeout: float = 600) -> str:
    proc = _run(["podman", *args], timeout=timeout)
    if proc.returncode != 0:
        raise AgentError(f"podman {args[0]} failed", _text(proc.stderr)[-800:], code="podman")
    return _text(proc.stdout)


def _receive_to_file(ctx: Context, size: int, path: str) -> str:
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


def _is_image_archive(path: str) -> bool:
    """docker-archive and oci-archive are loaded; anything else is a root filesystem to import."""
    import tarfile

    with tarfile.open(path) as tar:
        names = {m.name.lstrip("./") for m in tar.getmembers()[:64]}
    return "manifest.json" in names or "oci-layout" in names


def _put_image(ctx: Context, a: Json) -> None:
    image = a["image"]
    if not a.get("size"):
        ref = f"{image.rsplit(':', 1)[0]}@{a['digest']}" if a.get("digest") else image
        _podman("pull", "--quiet", ref)
        if ref != image:
            _podman("tag", ref, image)
        return
    tmp = os.path.join(a["releases"], f".incoming-{a['version']}-{os.getpid()}.image")
    try:
        digest = _receive_to_file(ctx, int(a["size"]), tmp)
        if a.get("sha256") and digest != a["sha256"]:
            raise AgentError(f"image archive arrived with sha256 {digest}, expected {a['sha256']}")
        if _is_image_archive(tmp):
            out = _podman("load", "--quiet", "-i", tmp)  # "Loaded image: NAME" (or "image(s)")
            loaded = out.splitlines()[-1].split(": ", 1)[-1].strip() if out else ""
            if loaded and loaded != image:
                _podman("tag", loaded, image)
        else:
            _podman("import", "--quiet", "--change", f"WORKDIR={a['image_root']}", tmp, image)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def do_load_image(ctx: Context, a: Json) -> Json:
    """The image into podman's storage, and its static frontend out into releases/<version>."""
    releases, version, image = a["releases"], a["version"], a["image"]
    _makedirs(releases)
    _put_image(ctx, a)
    dest = os.path.join(releases, version)
    meta_path = os.path.join(ctx.state_dir, "releases", f"{version}.json")
    if not os.path.isdir(dest):
        staging = os.path.join(releases, f".incoming-{version}-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        os.mkdir(staging, 0o755)
        try:
            if a.get("static_dir"):
                name = f"reconciler-extract-{os.getpid()}"
                _podman("create", "--name", name, image, "true", timeout=120)
                try:
                    inner = f"{a['image_root'].rstrip('/')}/{a['static_dir']}"
                    _makedirs(os.path.dirname(os.path.join(staging, a["static_dir"])))
                    _podman("cp", f"{name}:{inner}", os.path.join(staging, a["static_dir"]), timeout=300)
                finally:
                    _run(["podman", "rm", "-f", name], timeout=60)
            os.rename(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    meta = {
        "version": version,
        "image": image,
        "sha256": a.get("sha256") or a.get("digest"),
        "uploaded": _now(),
    }
    atomic_write(meta_path, json.dumps(meta).encode(), 0o644)
    _fsync_dir(releases)
    return {}


def do_write_file(ctx: Context, a: Json) -> Json:
    atomic_write(
        a["path"],
        a["content"].encode("utf-8", "surrogateescape"),
        int(a["mode"]),
        a.get("owner"),
        a.get("group"),
    )
    return {}


def do_remove_file(ctx: Context, a: Json) -> Json:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(a["path"])
        _fsync_dir(os.path.dirname(a["path"]))
    return {}


def do_set_symlink(ctx: Context, a: Json) -> Json:
    atomic_symlink(a["path"], a["target"])
    return {}


def do_daemon_reload(ctx: Context, a: Json) -> Json:
    _systemctl("daemon-reload")
    return {}


def _journal_tail(unit: str, lines: int = 20) -> str:
    proc = _run(["journalctl", "--no-pager", "-o", "short-precise", "-n", str(lines), "-u", unit], timeout=20)
    return f"last journal lines of {unit}:\n{_text(proc.stdout)}"


def _systemctl(verb: str, unit: str | None = None) -> None:
    argv = ["systemctl", verb] + (["--", unit] if unit else [])
    proc = _run(argv, timeout=180)
    if proc.returncode != 0:
        detail = _text(proc.stderr)
        if unit and verb in ("start", "restart", "reload", "reload-or-restart"):
            detail += "\n" + _journal_tail(unit)
        raise AgentError(f"systemctl {verb} {unit or ''} failed".strip(), detail, code="systemd")


def do_systemctl(ctx: Context, a: Json) -> Json:
    if a["verb"] in ("start", "restart"):
        # A deliberate start is not a crash loop: clear systemd's start-rate counter so a
        # quick deploy-rollback-deploy sequence is not refused ("start request repeated
        # too quickly"). Automatic restarts by systemd stay rate-limited.
        _run(["systemctl", "reset-failed", "--", a["unit"]], timeout=30)
    _systemctl(a["verb"], a["unit"])
    return {}


def _http_get(url: str, timeout: float) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return int(resp.status), resp.read(65536)
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read(65536)


def _names_version(body: bytes, version: str) -> bool:
    try:
        data = json.loads(body)
    except ValueError:
        return (
            re.search(
                r"(?<![\w.+-])" + re.escape(version) + r"(?![\w+-]|\.\w)", body.decode("utf-8", "replace")
            )
            is not None
        )
    return isinstance(data, dict) and str(data.get("version")) == version


def _main_pid(unit: str) -> int:
    out = _text(_run(["systemctl", "show", "-p", "MainPID", "--value", "--", unit], timeout=10).stdout)
    return int(out) if out.isdigit() else 0


def do_check_health(ctx: Context, a: Json) -> Json:
    """Pass after `passes` consecutive good answers spanning `stable` seconds from one process.

    The same-process rule catches a release that answers at first and then crashes: systemd
    restarts it under a new PID, which breaks the streak.
    """
    url, unit = a["url"], a.get("unit")
    deadline = time.monotonic() + float(a["timeout"])
    need, interval = int(a["passes"]), float(a["interval"])
    stable = float(a.get("stable") or 0)
    version = a.get("expect_version")
    streak = probes = 0
    streak_since, streak_pid = 0.0, 0
    last = "no answer yet"
    while True:
        probes += 1
        try:
            status, body = _http_get(url, timeout=min(5.0, max(0.5, deadline - time.monotonic())))
            good = status < 500 if a.get("any_status") else status == 200
            if good and version and not _names_version(body, version):
                good = False
                last = f"HTTP {status} but the answer does not name version {version}: {_text(body)[:200]}"
            elif not good:
                last = f"HTTP {status}: {_text(body)[:200]}"
        except OSError as exc:  # URLError is an OSError
            good = False
            last = f"no HTTP answer ({getattr(exc, 'reason', exc)})"
        if good:
            if streak == 0:
                streak_since, streak_pid = time.monotonic(), (_main_pid(unit) if unit and stable else 0)
            streak += 1
        else:
            streak = 0
        if streak >= need and time.monotonic() - streak_since >= stable:
            if not (unit and stable) or _main_pid(unit) == streak_pid:
                return {"probes": probes}
            streak = 0  # restarted by systemd in between: that is not healthy
            last = f"{unit} was restarted by systemd while answering (it crashed)"
        if unit and probes % 4 == 0:
            active = _text(_run(["systemctl", "is-active", "--", unit], timeout=10).stdout)
            if active == "failed":
                raise AgentError(
                    f"{unit} failed while waiting for health at {url}", _journal_tail(unit), code="health"
                )
        if time.monotonic() + interval > deadline:
            detail = f"last answer: {last}"
            if unit:
                detail += "\n" + _journal_tail(unit)
            raise AgentError(
                f"{url} was not healthy within {a['timeout']}s ({probes} probes)", detail, code="health"
            )
        time.sleep(interval)


def _caddy_validate(path: str) -> None:
    proc = _run(["caddy", "validate", "--config", path, "--adapter", "caddyfile"], timeout=60)
    if proc.returncode != 0:
        lines = [ln for ln in _text(proc.stderr + b"\n" + proc.stdout).splitlines() if "error" in ln.lower()]
        raise AgentError(
            "caddy refused the rendered Caddyfile; the live one was not touched",
            "\n".join(lines[-5:]),
            code="caddy",
        )


def do_write_caddyfile(ctx: Context, a: Json) -> Json:
    path = a["path"]
    folder = os.path.dirname(path)
    _makedirs(folder)
    candidate = os.path.join(folder, f".{os.path.basename(path)}.candidate-{os.getpid()}")
    atomic_write(candidate, a["content"].encode(), 0o644)
    try:
        _caddy_validate(candidate)
        old = _read_file(path)
        ctx.caddy_backup = (
            old["content"].encode("utf-8", "surrogateescape") if old and "content" in old else None
        )
        os.replace(candidate, path)
        _fsync_dir(folder)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(candidate)
    return {}


def _caddy_reload(path: str) -> None:
    """What the Caddy unit's ExecReload runs, but with our own timeout.

    Not `systemctl reload caddy`: Caddy before 2.10 tells systemd RELOADING=1 and, when the new
    config is refused, never READY=1 again (caddyserver/caddy#7385), so systemctl waits forever
    and the unit stays "reloading". Loading a good config afterwards sends READY=1.
    """
    proc = _run(["caddy", "reload", "--config", path, "--adapter", "caddyfile", "--force"], timeout=60)
    if proc.returncode != 0:
        text = _text(proc.stderr + b"\n" + proc.stdout)
        lines = [ln for ln in text.splitlines() if "error" in ln.lower()] or text.splitlines()
        raise AgentError("Caddy refused to load the new Caddyfile", "\n".join(lines[-3:]), code="caddy")


def do_load_caddy(ctx: Context, a: Json) -> Json:
    """Start Caddy, or gracefully reload it; when Caddy refuses a reload it keeps serving the
    old config, so the old file is put back (and loaded again) to keep disk and memory equal."""
    path = a["path"]
    if a.get("verb") == "start":
        _systemctl("start", a["unit"])
    else:
        try:
            _caddy_reload(path)
        except AgentError as exc:
            if ctx.caddy_backup is not None:
                atomic_write(path, ctx.caddy_backup, 0o644)
                with contextlib.suppress(AgentError):
                    _caddy_reload(path)
                exc.message += "; the previous Caddyfile is back in place and still serving"
            raise
    data = _read_file(path)
    if data and "sha256" in data:
        state = {"sha256": data["sha256"], "at": _now()}
        atomic_write(os.path.join(ctx.state_dir, "caddy-loaded.json"), json.dumps(state).encode(), 0o644)
    return {}


def do_record_quarantine(ctx: Context, a: Json) -> Json:
    path = os.path.join(ctx.state_dir, "quarantine.json")
    current = _read_json(path) or {}
    if not isinstance(current, dict) or current.get("unreadable"):
        current = {}
    if a.get("clear"):
        current.pop(a["version"], None)
    else:
        current[a["version"]] = {"at": _now(), "reason": a.get("why", "")}
    atomic_write(path, json.dumps(current, sort_keys=True).encode(), 0o644)
    return {}


def do_prune_release(ctx: Context, a: Json) -> Json:
    path = os.path.join(a["releases"], a["version"])
    if not os.path.isdir(path):
        return {}
    trash = os.path.join(a["releases"], f".trash-{a['version']}-{os.getpid()}")
    os.rename(path, trash)  # gone from view at once; the slow delete happens out of sight
    _fsync_dir(a["releases"])
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(a["state"], "releases", f"{a['version']}.json"))
    shutil.rmtree(trash, ignore_errors=True)
    if a.get("image") and shutil.which("podman"):
        _run(["podman", "rmi", a["image"]], timeout=120)  # refused while a container uses it: fine
    return {}


def _sqlite_copy(source: str, dest: str) -> None:
    """SQLite's online backup API: a consistent copy even while another process writes."""
    import sqlite3

    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(dest, timeout=30)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def do_snapshot_database(ctx: Context, a: Json) -> Json:
    database, snapshot = a["database"], a["snapshot"]
    if not os.path.exists(database):
        return {"skipped": "no database yet"}
    folder = os.path.dirname(snapshot)
    _makedirs(folder, 0o700)
    tmp = os.path.join(folder, f".{os.path.basename(snapshot)}.tmp-{os.getpid()}")
    try:
        _sqlite_copy(database, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, snapshot)  # a snapshot is whole or absent
        _fsync_dir(folder)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return {"bytes": os.path.getsize(snapshot)}


def do_restore_database(ctx: Context, a: Json) -> Json:
    for unit in a["units"]:
        _systemctl("stop", unit)  # nothing may write while the database is replaced
    _sqlite_copy(a["snapshot"], a["database"])
    return {}


HANDLERS: dict[str, Callable[[Context, Json], Json]] = {
    "upload_release": do_upload_release,
    "write_file": do_write_file,
    "remove_file": do_remove_file,
    "set_symlink": do_set_symlink,
    "daemon_reload": do_daemon_reload,
    "systemctl": do_systemctl,
    "check_health": do_check_health,
    "write_caddyfile": do_write_caddyfile,
    "load_caddy": do_load_caddy,
    "record_quarantine": do_record_quarantine,
    "prune_release": do_prune_release,
    "load_image": do_load_image,
    "snapshot_database": do_snapshot_database,
    "restore_database": do_restore_database,
}


# --- apply --------------------------------------------------------------------------------


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _append_history(state_dir: str, record: Json, keep: int = 1000) -> None:
    path = os.path.join(state_dir, "history.jsonl")
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, line)
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size > keep * 4096:  # trim rarely, keeping the newest records
        with open(path, "rb") as fh:
            lines = fh.readlines()[-keep:]
        atomic_write(path, b"".join(lines), 0o640)


def apply(request: Json, payload: IO[bytes] | None, emit: Emit, cancelled: Callable[[], bool]) -> Json:
    """Lock, check the host still matches the plan's observation, run the actions, record."""
    spec = request["observe"]
    actions: list[Json] = request["actions"]
    fault_after = int(request.get("fault_after_action") or 0)
    ctx = Context(request, payload, emit)
    started = time.monotonic()
    done: list[Json] = []
    failure: Json | None = None
    with HostLock(ctx.state_dir, request.get("holder", {}), float(request.get("lock_timeout", 0)), emit):
        locked_at = time.time()
        emit({"event": "locked"})
        before = observe(spec)
        if request.get("expect") and fingerprint(before) != request["expect"]:
            raise AgentError("the host changed since it was observed for this plan", code="stale")
        for index, action in enumerate(actions):
            if cancelled():
                failure = {"index": index, "error": "cancelled before this action", "code": "cancelled"}
                break
            emit({"event": "action_start", "index": index})
            t0 = time.monotonic()
            try:
                result = HANDLERS[action["kind"]](ctx, action)
            except AgentError as exc:
                failure = {"index": index, "error": exc.message, "detail": exc.detail, "code": exc.code}
                emit({"event": "action_failed", **failure})
                break
            except OSError as exc:
                failure = {
                    "index": index,
                    "error": f"{exc.strerror or exc} ({getattr(exc, 'filename', '') or ''})",
                    "code": "os",
                }
                emit({"event": "action_failed", **failure})
                break
            ms = round((time.monotonic() - t0) * 1000, 1)
            done.append({"index": index, "ms": ms})
            emit({"event": "action_done", "index": index, "ms": ms, "result": result})
            if fault_after and index + 1 == fault_after:
                os.kill(os.getpid(), signal.SIGKILL)  # test-only fault injection
        if not actions and request.get("record") is False:
            return {"event": "result", "ok": True, "failure": None, "done": [], "after": before}
        record = dict(request.get("journal", {}))
        record.update(
            finished=_now(),
            seconds=round(time.monotonic() - started, 3),
            result="failed" if failure else "ok",
            actions_done=len(done),
            locked_at=round(locked_at, 3),
            finished_at=round(time.time(), 3),
        )
        if failure:
            record["error"] = failure["error"]
        _append_history(ctx.state_dir, record)
    after = observe(spec)
    return {"event": "result", "ok": failure is None, "failure": failure, "done": done, "after": after}


def history(request: Json) -> Json:
    path = os.path.join(request["state"], "history.jsonl")
    limit = int(request.get("limit", 20))
    try:
        with open(path, "rb") as fh:
            lines = fh.readlines()[-limit:]
    except FileNotFoundError:
        lines = []
    records = []
    for line in lines:
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return {
        "event": "result",
        "ok": True,
        "records": records,
        "quarantine": _read_json(os.path.join(request["state"], "quarantine.json")) or {},
    }


def handle(
    request: Json, payload: IO[bytes] | None, emit: Emit, cancelled: Callable[[], bool] = lambda: False
) -> Json:
    """Entry point shared by the local executor and `main` below."""
    op = request.get("op")
    try:
        if op == "observe":
            return {"event": "result", "ok": True, "snapshot": observe(request["observe"])}
        if op == "apply":
            return apply(request, payload, emit, cancelled)
        if op == "history":
            return history(request)
        return {"event": "error", "error": f"unknown request {op!r}", "code": "protocol"}
    except AgentError as exc:
        return {"event": "error", "error": exc.message, "detail": exc.detail, "code": exc.code}


# --- remote entry point -------------------------------------------------------------------


def main() -> None:
    """stdin: one JSON request line, then `payload_size` bytes, then EOF or a cancel line."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # finish the current action if the link drops
    stdin = sys.stdin.buffer
    stdout = sys.stdout.buffer
    lock = threading.Lock()
    gone = threading.Event()

    def emit(event: Json) -> None:
        if gone.is_set():
            return
        with lock:
            try:
                stdout.write(json.dumps(event).encode() + b"\n")
                stdout.flush()
            except OSError:
                gone.set()  # the client went away; stop at the next action boundary

    request = json.loads(stdin.readline())
    size = int(request.get("payload_size") or 0)
    payload_read = threading.Event()

    def watch_stdin() -> None:
        # After the payload, stdin stays open while the client lives: EOF or any line = stop.
        payload_read.wait()
        stdin.readline()
        gone.set()

    if not size:
        payload_read.set()
    threading.Thread(target=watch_stdin, daemon=True).start()
    payload = io.BufferedReader(_PayloadDone(stdin, size, payload_read), CHUNK) if size else None
    emit(handle(request, payload, emit, gone.is_set))
    # The watcher still blocks in readline() holding stdin's lock: a normal interpreter exit
    # would wait a second for it and then abort, keeping the SSH session (and sshd's limit of
    # ten per connection) busy all that time. The answer is out; leave at once.
    sys.stdout.flush()
    os._exit(0)


class _PayloadDone(io.RawIOBase):
    """Reads exactly `size` bytes of stdin, then signals that stdin is free for control lines."""

    def __init__(self, raw: IO[bytes], size: int, done: threading.Event) -> None:
        self.raw = raw
        self.left = size
        self.done = done

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        if self.left <= 0:
            self.done.set()
            return 0
        data = self.raw.read(min(len(buf), self.left))
        if not data:
            self.done.set()
            return 0
        n = len(data)
        buf[:n] = data
        self.left -= n
        if self.left <= 0:
            self.done.set()
        return n


if __name__ == "__main__":
    main()
