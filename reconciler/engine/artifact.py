"""The release artifact on the machine running the reconciler: checked, then streamed.

Everything here happens before the host is touched, so a missing file, a checksum mismatch
or a hostile archive (a member, or links that together lead out of the release) stops the
run with nothing written anywhere.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from reconciler.agent.protocol import AgentError
from reconciler.agent.releases import unpack_release
from reconciler.errors import InputProblem, InvalidDesiredState
from reconciler.executors.base import Payload
from reconciler.spec.model import DesiredState


def _problem(desired: DesiredState, message: str) -> InvalidDesiredState:
    return InvalidDesiredState([InputProblem(str(desired.file), None, None, "release.source", message)])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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


def prepare(desired: DesiredState) -> Payload:
    """Open, verify and measure the artifact; raise InvalidDesiredState when it cannot be used."""
    source = desired.release.source
    if source is None:
        raise _problem(desired, "no release.source to upload")
    if desired.release.image is not None:
        return _prepare_image_archive(desired, source)
    if not source.exists():
        raise _problem(
            desired, f"{source} does not exist; build the release first (the host does not have it)"
        )
    if source.is_dir():
        spooled = _tar_directory(source)
        size = spooled.seek(0, os.SEEK_END)

        def reopen() -> IO[bytes]:
            # A new handle on the same temp file each time; `spooled` stays open meanwhile.
            fh = os.fdopen(os.dup(spooled.fileno()), "rb")
            fh.seek(0)
            return fh

        _refuse_hostile(desired, reopen)
        return Payload(size=size, open=reopen, label=str(source))
    if not source.is_file():
        raise _problem(desired, f"{source} is neither a directory nor a file")
    expected = desired.release.sha256
    if expected is not None:
        actual = sha256_of(source)
        if actual != expected:
            raise _problem(desired, f"{source} has sha256 {actual}, but release.sha256 says {expected}")
    _refuse_hostile(desired, lambda: source.open("rb"))
    return Payload(size=source.stat().st_size, open=lambda: source.open("rb"), label=str(source))


def _prepare_image_archive(desired: DesiredState, source: Path) -> Payload:
    """An image archive or root filesystem goes to podman as is, which unpacks it into its own
    storage; what is checked here is that it exists and is the artifact release.sha256 names."""
    if not source.is_file():
        raise _problem(desired, f"{source} does not exist; build the image archive first")
    expected = desired.release.sha256
    if expected is not None and sha256_of(source) != expected:
        raise _problem(desired, f"{source} does not have the sha256 release.sha256 says ({expected})")
    return Payload(size=source.stat().st_size, open=lambda: source.open("rb"), label=str(source))


def _refuse_hostile(desired: DesiredState, opener: Callable[[], IO[bytes]]) -> None:
    """Unpack the exact bytes the host will get into a temporary folder, with the host's own
    code: links are judged on a real tree, where chains of them show, and a folder source
    gets the same verdict as an archive. Costs one local extraction per upload."""
    source = desired.release.source
    try:
        with tempfile.TemporaryDirectory(prefix="reconciler-release-") as tmp, opener() as fh:
            files, _ = unpack_release(fh, os.path.join(tmp, "release"), desired.release.version)
    except AgentError as exc:
        raise _problem(desired, exc.message) from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _problem(desired, f"{source} is not a readable .tar.gz ({exc})") from None
    if files == 0:
        raise _problem(desired, f"{source} holds no files")
