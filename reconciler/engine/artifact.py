"""The release artifact on the machine running the reconciler: checked, then streamed.

Everything here happens before the host is touched, so a missing file, a checksum mismatch,
a hostile archive (a member, or links that together lead out of the release) or a release
without the program its backend runs stops the run with nothing written anywhere. The
sentences are the loader's (spec/artifacts.py), so `reconcile validate` and a run say the
same thing about the same artifact; `inspect` is what validate adds: the same look inside.
"""

from __future__ import annotations

import os
import stat
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from reconciler.agent.protocol import AgentError
from reconciler.agent.releases import unpack_release
from reconciler.errors import InputProblem, InvalidDesiredState
from reconciler.executors.base import Payload
from reconciler.spec.artifacts import ReleaseView, checksum_mismatch, kind_problem, missing, sha256_of
from reconciler.spec.model import DesiredState
from reconciler.spec.said import Said

__all__ = ["inspect", "prepare", "sha256_of"]


def _refused(desired: DesiredState, said: Said, field: str = "release.source") -> InvalidDesiredState:
    return InvalidDesiredState([desired.problem(field, said.message, said.hint)])


def _tar_directory(root: Path) -> IO[bytes]:
    """A directory becomes a gzip tar in a temp file, members sorted for a stable result."""
    out = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller, who keeps it open
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                full = Path(folder) / name
                tar.add(full, arcname=str(full.relative_to(root)), recursive=False)
    out.seek(0)
    return out


def _checked_source(desired: DesiredState) -> Path:
    source = desired.release.source
    if source is None:
        raise _refused(desired, Said("no release.source to upload", "give release.source"))
    image = desired.release.image is not None
    if not source.exists():
        raise _refused(desired, missing(source, image=image))
    kind = kind_problem(source, image=image)
    if kind is not None:
        raise _refused(desired, kind)
    expected = desired.release.sha256
    if expected is not None and source.is_file():
        actual = sha256_of(source)
        if actual != expected:
            raise _refused(desired, checksum_mismatch(source, actual, expected), "release.sha256")
    return source


def prepare(desired: DesiredState) -> Payload:
    """Open, verify and measure the artifact; raise InvalidDesiredState when it cannot be used."""
    source = _checked_source(desired)
    view = ReleaseView.of(desired)
    if view is None:
        # An image archive or root filesystem goes to the runtime as is, which unpacks it into
        # its own storage: that it exists, is an archive and has its checksum is what is checked.
        return Payload(size=source.stat().st_size, open=lambda: source.open("rb"), label=str(source))
    opener = _opener(source)
    errors = [p for p in _contents(view, opener) if p.is_error]
    if errors:
        raise InvalidDesiredState(errors)
    with opener() as fh:
        size = fh.seek(0, os.SEEK_END)
    return Payload(size=size, open=opener, label=str(source))


def inspect(view: ReleaseView) -> list[InputProblem]:
    """What `reconcile validate` finds inside the release it would upload: a hostile or empty
    archive, a backend or task program it lacks, a frontend folder or page it lacks (the
    last two are warnings: an API-only app serves no frontend)."""
    return _contents(view, _opener(view.source))


def _opener(source: Path) -> Callable[[], IO[bytes]]:
    if not source.is_dir():
        return lambda: source.open("rb")
    spooled = _tar_directory(source)

    def reopen() -> IO[bytes]:
        # A new handle on the same temp file each time; `spooled` stays open meanwhile.
        fh = os.fdopen(os.dup(spooled.fileno()), "rb")
        fh.seek(0)
        return fh

    return reopen


def _contents(view: ReleaseView, opener: Callable[[], IO[bytes]]) -> list[InputProblem]:
    """Unpack the exact bytes the host will get into a temporary folder, with the host's own
    code: links are judged on a real tree, where chains of them show, and a folder source
    gets the same verdict as an archive. Costs one local extraction per upload."""
    at = ("release", "source")
    try:
        with tempfile.TemporaryDirectory(prefix="reconciler-release-") as tmp, opener() as fh:
            tree = Path(tmp) / "release"
            files, _ = unpack_release(fh, str(tree), view.version)
            if files == 0:
                return [view.problem(at, f"{view.source} holds no files", "build the release into it")]
            return _missing_inside(view, tree)
    except AgentError as exc:
        return [view.problem(at, exc.message, "build the release again without it")]
    except (tarfile.TarError, EOFError, OSError) as exc:
        return [view.problem(at, f"{view.source} is not a readable tar archive ({exc})", "build it again")]


def _program(tree: Path, version: str, argv: tuple[str, ...]) -> str | None:
    """Why the program a command runs from the release cannot run, or None. A first word
    without '/' is a program on the host's PATH, and an absolute one a file of the host."""
    if not argv or "/" not in argv[0] or argv[0].startswith("/"):
        return None
    head = argv[0]
    path = tree / head.removeprefix("./")
    if not path.is_file():
        return f"{head} is not in release {version}" if not path.exists() else f"{head} is not a file"
    if not os.stat(path).st_mode & stat.S_IXUSR:
        return f"{head} is in release {version} but not executable"
    return None


def _missing_inside(view: ReleaseView, tree: Path) -> list[InputProblem]:
    version = view.version
    out: list[InputProblem] = []
    fix = (
        "build it into the release (chmod +x before packing), or fix the path: it is relative to the release"
    )
    why = _program(tree, version, view.command)
    if why:
        out.append(view.problem(("backend", "command"), why, fix))
    for where, argv in view.tasks:
        why = _program(tree, version, argv)
        if why:
            out.append(view.problem(where, why, fix))
    if view.static_dir is not None:
        static = tree / view.static_dir
        if not static.is_dir():
            out.append(
                view.problem(
                    ("frontend", "static_dir"),
                    f"release {version} has no folder {view.static_dir}: Caddy would answer 404 for every "
                    "path but the backend's",
                    "build the frontend into it, or set frontend.static_dir to where it is",
                    warning=True,
                )
            )
        elif view.maintenance_page and not (static / view.maintenance_page).is_file():
            out.append(
                view.problem(
                    ("proxy", "maintenance_page"),
                    f"release {version} has no {view.static_dir}/{view.maintenance_page}: "
                    "in maintenance Caddy would answer 404 instead of the page",
                    "add the page to the frontend build, or fix the path (relative to static_dir)",
                    warning=True,
                )
            )
    return out
