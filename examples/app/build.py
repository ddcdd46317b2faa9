#!/usr/bin/env python3
"""Build a deterministic choiros release artifact (the CI build step).

    python3 examples/app/build.py VERSION [--out DIR] [--format tar.gz|dir]
                                          [--fault health-500|crash|slow-start|notes-500]

Produces ``DIR/choiros-VERSION.tar.gz`` (default) or the directory ``DIR/choiros-VERSION/``
(``DIR`` defaults to ``examples/app/dist``) and prints one line: ``PATH sha256=HEX``.

Release layout (paths relative to the release root)::

    VERSION                              the version, one line
    FAULT                                only with --fault: the injected fault
    bin/backend, bin/frontend-dev        entry points (0755)
    backend/choiros_backend.py           the backend
    frontend/choiros_frontend_dev.py     the frontend dev server
    frontend/src/...                     frontend sources (templates)
    frontend/dist/index.html             built page, version substituted, naming the assets
    frontend/dist/assets/NAME-HASH.EXT   app.js and style.css, fingerprinted: the name
                                         changes when the content does (cache them forever)
    frontend/dist/**.gz                  each of those gzipped, for Caddy's precompressed

The tarball is reproducible: members sorted, relative paths with no ``./`` prefix and no
top-level directory, regular files and directories only, modes 0755 (directories, bin/*)
or 0644, uid/gid 0, empty user/group names, mtime ``$SOURCE_DATE_EPOCH`` (0 if unset),
gzip header mtime 0. The sha256 reported is always that of this canonical tarball, also
for ``--format dir`` (the directory holds exactly the tarball's content).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import io
import os
import re
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

APP_DIR = Path(__file__).resolve().parent
DEFAULT_OUT_DIR = APP_DIR / "dist"
NAME = "choiros"

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
FORMATS = ("tar.gz", "dir")
FAULTS = ("health-500", "crash", "slow-start", "chdir", "notes-500")

DIR_MODE = 0o755
EXEC_MODE = 0o755
FILE_MODE = 0o644

# Source trees copied into the release, relative to APP_DIR.
SOURCE_TREES = ("bin", "backend", "frontend")
SKIP_DIRS = frozenset({"__pycache__", "dist", "node_modules"})
SKIP_SUFFIXES = (".pyc", ".pyo", ".swp", "~")

# A release: relative posix path -> (content, mode). Directories are implied.
Files = dict[str, tuple[bytes, int]]


class BuildError(ValueError):
    """Invalid build input (bad version, format or fault)."""


def validate_version(version: str) -> str:
    if not VERSION_RE.fullmatch(version):
        raise BuildError(
            f"invalid version {version!r}: must match {VERSION_RE.pattern} "
            "(letters, digits, '.', '_', '+', '-'; at most 64 characters)"
        )
    return version


def source_date_epoch() -> int:
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise BuildError(f"SOURCE_DATE_EPOCH is not an integer: {raw!r}") from None
    if value < 0:
        raise BuildError(f"SOURCE_DATE_EPOCH is negative: {value}")
    return value


def _load_frontend_module() -> ModuleType:
    path = APP_DIR / "frontend" / "choiros_frontend_dev.py"
    spec = importlib.util.spec_from_file_location("_choiros_frontend_dev_build", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # keep the tree clean
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = saved
    return module


def _skip(name: str) -> bool:
    return name.startswith(".") or name.endswith(SKIP_SUFFIXES)


def collect_sources() -> Files:
    """The source files of the app that go into every release, with their release modes."""
    files: Files = {}
    for tree in SOURCE_TREES:
        base = APP_DIR / tree
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not _skip(d))
            for filename in sorted(filenames):
                if _skip(filename):
                    continue
                path = Path(dirpath) / filename
                if not path.is_file():
                    continue
                rel = path.relative_to(APP_DIR).as_posix()
                mode = EXEC_MODE if rel.startswith("bin/") else FILE_MODE
                files[rel] = (path.read_bytes(), mode)
    for required in ("bin/backend", "bin/frontend-dev", "frontend/src/index.html"):
        if required not in files:
            raise RuntimeError(f"missing source file {APP_DIR / required}")
    return files


def fingerprinted(name: str, data: bytes) -> str:
    """assets/NAME-HASH.EXT: a new name whenever the content changes, as Vite, Trunk and
    Dioxus name what they build, so the file can be cached for good."""
    stem, dot, ext = name.rpartition(".")
    return f"assets/{stem}-{hashlib.sha256(data).hexdigest()[:10]}{dot}{ext}"


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def frontend_dist(files: Files, version: str) -> Files:
    """The built frontend: pages with the version substituted and the assets' fingerprinted
    names in their links, and a .gz beside every file for Caddy to serve precompressed."""
    frontend = _load_frontend_module()
    sources = {
        rel[len("frontend/src/") :]: data
        for rel, (data, _m) in files.items()
        if rel.startswith("frontend/src/")
    }
    dist: dict[str, bytes] = {}
    links: dict[str, str] = {}
    for name, data in sources.items():
        if not name.endswith(".html"):
            dist[fingerprinted(name, data)] = data
            links[f'"/{name}"'] = f'"/{fingerprinted(name, data)}"'
    for name, data in sources.items():
        if name.endswith(".html"):
            page = frontend.render_page(data.decode("utf-8"), version, frontend.MODE_RELEASE)
            for plain, hashed in links.items():
                page = page.replace(plain, hashed)
            if "{{CHOIROS_" in page:
                raise RuntimeError(f"unsubstituted token left in frontend/dist/{name}")
            dist[name] = page.encode("utf-8")
    out: Files = {}
    for name, data in dist.items():
        out[f"frontend/dist/{name}"] = (data, FILE_MODE)
        out[f"frontend/dist/{name}.gz"] = (gzipped(data), FILE_MODE)
    return out


def release_files(version: str, fault: str | None) -> Files:
    """Everything in the release, keyed by relative path."""
    files = collect_sources()
    files.update(frontend_dist(files, version))
    files["VERSION"] = (f"{version}\n".encode(), FILE_MODE)
    if fault is not None:
        files["FAULT"] = (f"{fault}\n".encode(), FILE_MODE)
    return files


def _sort_key(rel: str) -> list[str]:
    return rel.split("/")


def _all_dirs(files: Files) -> set[str]:
    dirs: set[str] = set()
    for rel in files:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return dirs


def tarball_bytes(files: Files, mtime: int) -> bytes:
    """The canonical, reproducible .tar.gz of a release."""
    entries: list[tuple[str, bytes | None, int]] = [(d, None, DIR_MODE) for d in _all_dirs(files)]
    entries += [(rel, data, mode) for rel, (data, mode) in files.items()]
    entries.sort(key=lambda entry: _sort_key(entry[0]))

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, data, mode in entries:
            info = tarfile.TarInfo(rel)
            info.mode = mode
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.type = tarfile.REGTYPE
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    compressed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, compresslevel=9, mtime=0) as gz:
        gz.write(raw.getvalue())
    return compressed.getvalue()


def _write_dir(files: Files, target: Path, mtime: int) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        staging.chmod(DIR_MODE)
        for rel, (data, mode) in sorted(files.items(), key=lambda item: _sort_key(item[0])):
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(mode)
            os.utime(path, (mtime, mtime))
        for rel in sorted(_all_dirs(files), key=_sort_key, reverse=True):
            (staging / rel).chmod(DIR_MODE)
            os.utime(staging / rel, (mtime, mtime))
        os.utime(staging, (mtime, mtime))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_file_atomic(data: bytes, target: Path) -> None:
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, FILE_MODE)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def build(
    version: str,
    out_dir: Path | str,
    fmt: str = "tar.gz",
    fault: str | None = None,
) -> tuple[Path, str]:
    """Build the release; returns (artifact path, sha256 of the canonical tarball)."""
    validate_version(version)
    if fmt not in FORMATS:
        raise BuildError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if fault is not None and fault not in FAULTS:
        raise BuildError(f"unknown fault {fault!r} (choose from {', '.join(FAULTS)})")
    mtime = source_date_epoch()

    files = release_files(version, fault)
    archive = tarball_bytes(files, mtime)
    sha256 = hashlib.sha256(archive).hexdigest()

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "tar.gz":
        target = out / f"{NAME}-{version}.tar.gz"
        _write_file_atomic(archive, target)
    else:
        target = out / f"{NAME}-{version}"
        _write_dir(files, target, mtime)
    return target, sha256


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build.py", description="Build a reproducible choiros release artifact."
    )
    parser.add_argument("version", help="release version, e.g. 1.4.2")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT_DIR,
        help=f"output directory (default {DEFAULT_OUT_DIR})",
    )
    parser.add_argument("--format", choices=FORMATS, default="tar.gz", dest="fmt")
    parser.add_argument("--fault", choices=FAULTS, default=None, help="bake a test fault into the release")
    args = parser.parse_args(argv)
    if not VERSION_RE.fullmatch(args.version):
        parser.error(f"invalid version {args.version!r}: must match {VERSION_RE.pattern}")
    try:
        path, sha256 = build(args.version, args.out, args.fmt, args.fault)
    except BuildError as exc:
        parser.error(str(exc))
    sys.stdout.write(f"{path} sha256={sha256}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
