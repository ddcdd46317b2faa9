#!/usr/bin/env python3
"""Build the choiros container image: a root file system tar for ``podman import``.

    python3 examples/app/build_image.py VERSION [--out DIR] [--runtime-root /]
                                                [--fault health-500|crash|slow-start]
                                                [--part all|backend|frontend]
                                                [--docker-archive REPO:TAG]

Writes ``DIR/choiros-VERSION.image.tar`` (``DIR`` defaults to ``examples/app/dist``) and
prints one line: ``PATH sha256=HEX``. From Python: ``build_image(version, out_dir,
runtime_root="/", fault=None)`` returns ``(path, sha256)``.

No registry and no base image: the tar is a whole root file system, made of

* a minimal Python taken from ``--runtime-root`` (a Debian root: ``/`` on a Debian CI
  machine, or a debootstrapped tree): ``/usr/bin/python3.11`` and the ``python3``
  symlink, the shared libraries it and its extension modules need (found from their ELF
  ``NEEDED`` entries under the root, the dynamic loader included), and the standard
  library ``/usr/lib/python3.11`` without test suites, idlelib, tkinter, turtledemo,
  ensurepip, build-time files and ``__pycache__``;
* ``/etc/passwd`` and ``/etc/group`` with root and nobody, ``/root``, ``/tmp`` (1777);
* the release at ``/app``: exactly what ``build.py`` puts in a release (``/app/VERSION``,
  ``/app/bin/backend``, ...).

The interpreter runs on the C library it came with, so the image runs on any kernel but
must be built from the root whose Python is wanted (for the bookworm test hosts: their
rootfs, Python 3.11.2), not from whatever ``python3`` the build machine has first on
PATH. There is no shell and no ``/usr/bin/env`` in the image: ``bin/backend``'s
``#!/usr/bin/env python3`` line does not work there, so start it through the interpreter.

Import it with a working directory and a default command (the tar carries neither)::

    podman import --change 'WORKDIR=/app' \
        --change 'CMD=["/usr/bin/python3","bin/backend","--port","8080"]' \
        choiros-VERSION.image.tar localhost/choiros:VERSION

``IMPORT_CHANGES`` below holds these ``--change`` values. No spaces in the CMD list:
Podman 4.3 splits a change at its first space (``invalid instruction
CMD=["/USR/BIN/PYTHON3",``); the Dockerfile form ``CMD ["...", "..."]`` works too.

Running it (``podman run [OPTIONS] IMAGE /usr/bin/python3 bin/backend --port PORT``):

* ``DATABASE_PATH`` is required, e.g. ``-e DATABASE_PATH=/var/lib/choiros/choiros.db
  -v /var/lib/choiros:/var/lib/choiros`` (the image has no writable state of its own).
* With ``--network host`` the backend's default ``--host 127.0.0.1`` is the host's own
  loopback, as for a native process. With ``-p 127.0.0.1:HOSTPORT:8080`` instead, add
  ``--host 0.0.0.0``: forwarded connections arrive on the container's own interface.
* Use ``--init``: the backend is PID 1 otherwise, and PID 1 gets no default signal
  actions, so a stop that comes before its SIGTERM handler is installed waits out the
  whole ``podman stop -t`` timeout ("StopSignal SIGTERM failed to stop container ... in
  5 seconds, resorting to SIGKILL").

``--part frontend`` builds the frontend's own image: the same Python and only what the
frontend needs (``/app/VERSION``, ``/app/frontend/``, ``/app/bin/frontend-dev``), written to
``choiros-frontend-VERSION.image.tar``; ``--part backend`` leaves the frontend out of the
backend's image (``choiros-backend-VERSION.image.tar``). ``--docker-archive REPO:TAG`` wraps
the root file system as the single layer of a ``docker-archive`` (``.docker.tar``), with
the working directory and command set, which ``docker load``, ``podman load`` and
``skopeo copy docker-archive:...`` (to push it to a registry) all read.

The tar is reproducible: members sorted, no ``./`` prefix, uid/gid 0 without names,
mtime ``$SOURCE_DATE_EPOCH`` (0 if unset), modes as in the runtime root (release files as
in ``build.py``), so the same inputs give the same sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import stat
import struct
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
# build.py is a script next to this one, not a package module: the same import the
# tests use, so the release files come from its code, not a copy of it.
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))
import build  # type: ignore[import-not-found]  # noqa: E402

DEFAULT_OUT_DIR = APP_DIR / "dist"
APP_ROOT = "app"
PYTHON = "usr/bin/python3.11"
PYTHON_LINK = "usr/bin/python3"
STDLIB = "usr/lib/python3.11"

#: `podman import --change` values the image expects (see the module docstring).
IMPORT_CHANGES: tuple[str, ...] = (
    f"WORKDIR=/{APP_ROOT}",
    'CMD=["/usr/bin/python3","bin/backend","--port","8080"]',  # no spaces: see above
)

#: Standard library directories nobody runs in production (test suites, GUI, pip).
STDLIB_SKIP_DIRS = frozenset(
    {"__pycache__", "test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo", "ensurepip"}
)
#: Extension modules that exist only for CPython's own test suite, and Tk.
DYNLOAD_SKIP_PREFIXES = ("_test", "_ctypes_test", "_xxtestfuzz", "xxlimited", "_tkinter")

#: Where the dynamic loader looks without an /etc/ld.so.cache (the image has none):
#: the multiarch directories first, per ELF machine.
MULTIARCH = {62: "x86_64-linux-gnu", 183: "aarch64-linux-gnu"}
LIBRARY_DIRS = ("lib/{arch}", "usr/lib/{arch}", "lib64", "usr/lib64", "lib", "usr/lib")

PASSWD = (
    "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
GROUP = "root:x:0:\nnogroup:x:65534:\n"

MAX_SYMLINK_HOPS = 40


class ImageError(build.BuildError):
    """The image cannot be built (bad input, or the runtime root lacks something)."""


@dataclass(frozen=True)
class Member:
    """One tar member: a directory, a symlink (target) or a file (source path or bytes)."""

    kind: str  # "dir", "symlink" or "file"
    mode: int
    target: str = ""
    source: Path | None = None
    data: bytes | None = None


# ------------------------------------------------------------------ ELF


@dataclass(frozen=True)
class ElfInfo:
    machine: int
    interpreter: str | None
    needed: tuple[str, ...]


def read_elf(data: bytes, name: str) -> ElfInfo:
    """PT_INTERP and the DT_NEEDED names of a 64-bit little-endian ELF file.

    Read through the program headers (what the loader itself uses), not the section
    headers, which a stripped file need not keep meaningful.
    """
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ImageError(f"{name}: not a 64-bit little-endian ELF file")
    (machine,) = struct.unpack_from("<H", data, 0x12)
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads: list[tuple[int, int, int]] = []  # (vaddr, filesz, offset)
    dynamic: tuple[int, int] | None = None  # (offset, size)
    interpreter: str | None = None
    for i in range(phnum):
        p_type, _flags, offset, vaddr, _paddr, filesz, _memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", data, phoff + i * phentsize
        )
        if p_type == 1:  # PT_LOAD
            loads.append((vaddr, filesz, offset))
        elif p_type == 2:  # PT_DYNAMIC
            dynamic = (offset, filesz)
        elif p_type == 3:  # PT_INTERP
            interpreter = data[offset : offset + filesz].split(b"\0", 1)[0].decode()
    if dynamic is None:
        return ElfInfo(machine, interpreter, ())
    needed_offsets: list[int] = []
    strtab_vaddr = None
    for pos in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, value = struct.unpack_from("<qQ", data, pos)
        if tag == 0:  # DT_NULL
            break
        if tag == 1:  # DT_NEEDED: an offset into the string table
            needed_offsets.append(value)
        elif tag == 5:  # DT_STRTAB: a virtual address, mapped to the file via PT_LOAD
            strtab_vaddr = value
    if strtab_vaddr is None:
        raise ImageError(f"{name}: dynamic section without a string table")
    strtab = next(
        (off + strtab_vaddr - va for va, size, off in loads if va <= strtab_vaddr < va + size), None
    )
    if strtab is None:
        raise ImageError(f"{name}: string table outside every loaded segment")
    needed = tuple(data[strtab + o : data.index(b"\0", strtab + o)].decode() for o in needed_offsets)
    return ElfInfo(machine, interpreter, needed)


# ------------------------------------------------------------------ collecting files


class RootTree:
    """Members copied from a runtime root, symlinks kept as symlinks.

    Every path is added together with the directories and symlinks on the way to it
    (bookworm's /lib is a symlink to usr/lib, /lib64/ld-linux-x86-64.so.2 one to the
    real loader), so the same lookups work inside the image as in the root.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.members: dict[str, Member] = {}

    def add(self, path: str) -> str:
        """Add path (absolute, as seen inside the root); return its real path there."""
        return self._walk(path, record=True)

    def exists(self, path: str) -> bool:
        """Whether path resolves to something inside the root (symlinks resolved there)."""
        try:
            self._walk(path, record=False)
        except ImageError:
            return False
        return True

    def _walk(self, path: str, *, record: bool) -> str:
        """Resolve path component by component inside the root, like the kernel would
        with the root as /; with record=True, add every directory, symlink and the
        final file met on the way."""
        pending = [p for p in path.split("/") if p]
        done: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            if part in (".", ".."):
                if part == ".." and done:
                    done.pop()
                continue
            rel = "/".join([*done, part])
            try:
                st = (self.root / rel).lstat()
            except FileNotFoundError:
                raise ImageError(f"{path}: /{rel} does not exist under {self.root}") from None
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(self.root / rel)
                self._record(record, rel, Member("symlink", 0o777, target=target))
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise ImageError(f"{path}: too many levels of symbolic links under {self.root}")
                if target.startswith("/"):
                    done = []  # absolute: from the root's top, never this machine's
                pending = [p for p in target.split("/") if p] + pending
                continue
            done.append(part)
            if stat.S_ISDIR(st.st_mode):
                self._record(record, rel, Member("dir", stat.S_IMODE(st.st_mode)))
            elif stat.S_ISREG(st.st_mode) and not pending:
                self._record(record, rel, Member("file", stat.S_IMODE(st.st_mode), source=self.root / rel))
            else:
                raise ImageError(f"{path}: /{rel} is neither a directory, a file nor a symlink")
        return "/" + "/".join(done)

    def _record(self, record: bool, rel: str, member: Member) -> None:
        if record:
            self.members.setdefault(rel, member)

    def add_tree(self, path: str, skip_dir: set[str] | frozenset[str], skip_file: tuple[str, ...]) -> None:
        """Add a directory tree, leaving out directories named in skip_dir and files
        (and symlinks) whose names start with a prefix in skip_file."""
        real = self.add(path).lstrip("/")
        for dirpath, dirnames, filenames in os.walk(self.root / real):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            kept: list[str] = []
            for name in sorted(dirnames):
                if name in skip_dir or name.startswith("config-"):  # config-3.11-*: static libs
                    continue
                if (Path(dirpath) / name).is_symlink():
                    self.add(f"/{rel_dir}/{name}")
                else:
                    kept.append(name)
            dirnames[:] = kept
            self.add(f"/{rel_dir}")
            for name in sorted(filenames):
                if name.startswith(skip_file) or name.endswith((".pyc", ".pyo")):
                    continue
                self.add(f"/{rel_dir}/{name}")

    def elf_files(self) -> Iterator[tuple[str, bytes]]:
        for rel, member in sorted(self.members.items()):
            if member.kind == "file" and member.source is not None:
                with member.source.open("rb") as handle:
                    if handle.read(4) != b"\x7fELF":
                        continue
                yield rel, member.source.read_bytes()

    def add_libraries(self) -> None:
        """Add the dynamic loader and every shared library the ELF files need, transitively."""
        queue = list(self.elf_files())
        seen: set[str] = set()
        while queue:
            rel, data = queue.pop(0)
            info = read_elf(data, rel)
            wanted = [info.interpreter] if info.interpreter else []
            wanted += [self._find_library(name, info.machine, rel) for name in info.needed]
            for path in wanted:
                real = self.add(path).lstrip("/")
                if real not in seen:
                    seen.add(real)
                    queue.append((real, (self.root / real).read_bytes()))

    def _find_library(self, name: str, machine: int, needed_by: str) -> str:
        if "/" in name:
            return name
        arch = MULTIARCH.get(machine)
        dirs = [d.format(arch=arch) for d in LIBRARY_DIRS if arch or "{arch}" not in d]
        for directory in dirs:
            candidate = f"/{directory}/{name}"
            if self.exists(candidate):
                return candidate
        raise ImageError(f"{name} (needed by /{needed_by}) is in none of {dirs} under {self.root}")


def runtime_members(runtime_root: Path) -> dict[str, Member]:
    """The minimal Python of a Debian root: interpreter, stdlib, shared libraries."""
    if not (runtime_root / PYTHON).is_file():
        raise ImageError(f"no /{PYTHON} under {runtime_root} (install python3.11 there)")
    tree = RootTree(runtime_root)
    tree.add(f"/{PYTHON}")
    tree.add(f"/{PYTHON_LINK}")
    tree.add_tree(f"/{STDLIB}", STDLIB_SKIP_DIRS, DYNLOAD_SKIP_PREFIXES)
    tree.add_libraries()
    return tree.members


def base_members() -> dict[str, Member]:
    """What a process expects of a root besides its program: users, /root, /tmp."""
    return {
        "etc": Member("dir", 0o755),
        "etc/passwd": Member("file", 0o644, data=PASSWD.encode()),
        "etc/group": Member("file", 0o644, data=GROUP.encode()),
        "root": Member("dir", 0o700),
        "tmp": Member("dir", 0o1777),
    }


#: What each image holds of the release: everything, or the backend's and the frontend's part.
PARTS = ("all", "backend", "frontend")
FRONTEND_FILES = ("VERSION", "frontend/", "bin/frontend-dev")


def _in_part(rel: str, part: str) -> bool:
    frontend = any(rel == f or (f.endswith("/") and rel.startswith(f)) for f in FRONTEND_FILES)
    return part == "all" or (part == "frontend") == frontend or (part == "backend" and rel == "VERSION")


def app_members(version: str, fault: str | None, part: str = "all") -> dict[str, Member]:
    """The release build.py makes, under /app (or the part of it one image holds)."""
    files = build.release_files(version, fault)
    members = {APP_ROOT: Member("dir", build.DIR_MODE)}
    for rel, (data, mode) in files.items():
        if _in_part(rel, part):
            members[f"{APP_ROOT}/{rel}"] = Member("file", mode, data=data)
    return members


# ------------------------------------------------------------------ writing the tar


def _with_parents(members: dict[str, Member]) -> dict[str, Member]:
    """Add any missing parent directories (0755), so every member's parent is listed."""
    complete = dict(members)
    for rel in members:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            complete.setdefault("/".join(parts[:i]), Member("dir", 0o755))
    return complete


def write_tar(members: dict[str, Member], target: Path, mtime: int) -> str:
    """Write the members as a reproducible tar to target (atomically); return its sha256."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for rel in sorted(members, key=lambda r: r.split("/")):
                    _add_member(tar, rel, members[rel], mtime)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp_name, build.FILE_MODE)
        sha256 = _sha256_file(Path(tmp_name))
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return sha256


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _add_member(tar: tarfile.TarFile, rel: str, member: Member, mtime: int) -> None:
    info = tarfile.TarInfo(rel)
    info.mode = member.mode
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if member.kind == "dir":
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif member.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = member.target
        tar.addfile(info)
    else:
        data = member.data
        if data is None:
            assert member.source is not None
            data = member.source.read_bytes()
        info.type = tarfile.REGTYPE
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def build_image(
    version: str,
    out_dir: Path | str,
    runtime_root: Path | str = "/",
    fault: str | None = None,
    part: str = "all",
) -> tuple[Path, str]:
    """Build the image tar; returns (path, sha256 of the tar)."""
    build.validate_version(version)
    if fault is not None and fault not in build.FAULTS:
        raise ImageError(f"unknown fault {fault!r} (choose from {', '.join(build.FAULTS)})")
    if part not in PARTS:
        raise ImageError(f"unknown part {part!r} (choose from {', '.join(PARTS)})")
    mtime = build.source_date_epoch()
    members = runtime_members(Path(runtime_root))
    members.update(base_members())
    members.update(app_members(version, fault, part))
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    name = build.NAME if part == "all" else f"{build.NAME}-{part}"
    target = out / f"{name}-{version}.image.tar"
    return target, write_tar(_with_parents(members), target, mtime)


def docker_archive(rootfs_tar: Path, repo_tag: str, mtime: int | None = None) -> tuple[Path, str]:
    """Wrap a root file system tar as the single layer of a docker-archive next to it
    (``NAME.docker.tar``), reproducibly; returns (path, sha256 of the archive)."""
    layer = rootfs_tar.read_bytes()
    layer_id = hashlib.sha256(layer).hexdigest()
    when = build.source_date_epoch() if mtime is None else mtime
    config = {
        "architecture": "amd64" if os.uname().machine == "x86_64" else "arm64",
        "os": "linux",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
        "config": {
            "WorkingDir": f"/{APP_ROOT}",
            "Cmd": ["/usr/bin/python3", "bin/backend", "--port", "8080"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
    manifest = [{"Config": config_name, "RepoTags": [repo_tag], "Layers": [f"{layer_id}/layer.tar"]}]
    members = {
        layer_id: Member("dir", 0o755),
        f"{layer_id}/layer.tar": Member("file", 0o644, data=layer),
        config_name: Member("file", 0o644, data=config_bytes),
        "manifest.json": Member("file", 0o644, data=json.dumps(manifest).encode()),
    }
    target = rootfs_tar.with_name(rootfs_tar.name.removesuffix(".image.tar") + ".docker.tar")
    return target, write_tar(members, target, when)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build_image.py",
        description="Build the choiros image: a root file system tar for podman import.",
    )
    parser.add_argument("version", help="release version, e.g. 1.4.2")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT_DIR, help=f"output directory (default {DEFAULT_OUT_DIR})"
    )
    parser.add_argument(
        "--runtime-root",
        type=Path,
        default=Path("/"),
        help="Debian root to take /usr/bin/python3.11, its libraries and stdlib from (default /)",
    )
    parser.add_argument(
        "--fault", choices=build.FAULTS, default=None, help="bake a test fault into the release"
    )
    parser.add_argument("--part", choices=PARTS, default="all", help="what of the release the image holds")
    parser.add_argument("--docker-archive", metavar="REPO:TAG", help="also wrap it as a docker-archive")
    args = parser.parse_args(argv)
    try:
        path, sha256 = build_image(args.version, args.out, args.runtime_root, args.fault, args.part)
        if args.docker_archive:
            path, sha256 = docker_archive(path, args.docker_archive)
    except build.BuildError as exc:
        parser.error(str(exc))
    sys.stdout.write(f"{path} sha256={sha256}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
