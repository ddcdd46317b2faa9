"""release.source on the machine running reconcile: does it exist, is it a kind the
reconciler deploys, does it have the checksum release.sha256 names.

What a run needs is cheap: the kind, from a stat and the first bytes, when the artifact is
there (a run that needs no upload, such as a revert to a release the host keeps, does not
need the artifact at all). `reconcile validate` asks for more: the artifact must exist (under
--offline a missing one, built later by CI, is a warning) and its checksum is computed. The
engine's upload says the same sentences (engine/artifact.py), so a missing artifact reads the
same whether validate or a run finds it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import InputProblem
from reconciler.spec.model import DesiredState
from reconciler.spec.offline import Skipped
from reconciler.spec.said import Said
from reconciler.spec.semantics import parse_command
from reconciler.spec.yaml_source import Path_, SourceDoc, dotted

ACCEPTED = "a folder or a tar archive (.tar.gz or .tgz; .tar, .tar.xz and .tar.bz2 work too)"
IMAGE_ACCEPTED = "an image archive file (`podman save`, `docker save`) or a root-filesystem tar"


def missing(source: Path, *, image: bool) -> Said:
    what = "the image archive" if image else "the release"
    return Said(
        f"{source} does not exist",
        f"build {what} first (the path is relative to the desired-state file), or check it "
        "without artifacts: reconcile validate --offline",
    )


def checksum_mismatch(source: Path, actual: str, expected: str) -> Said:
    return Said(
        f"{source} has sha256 {actual}, but release.sha256 says {expected}",
        "deploy the artifact that was checksummed, or put this one's `sha256sum` in release.sha256",
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _looks_like(head: bytes) -> str:
    """What the first bytes of a file say it is: "tar" (compressed or not), or a name."""
    if head.startswith(b"\x1f\x8b") or head.startswith(b"BZh") or head.startswith(b"\xfd7zXZ\x00"):
        return "tar"  # gzip, bzip2, xz: what tarfile's "r|*" unpacks; the contents are checked on upload
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head.startswith(b"(\xb5/\xfd"):
        return "a zstd-compressed file"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "a .zip archive"
    if head.startswith(b"7z\xbc\xaf"):
        return "a .7z archive"
    if head.startswith(b"Rar!"):
        return "a .rar archive"
    if head.startswith(b"\x7fELF"):
        return "a program (ELF), not an archive"
    return "not an archive"


def kind_problem(source: Path, *, image: bool) -> Said | None:
    """None when `source` is something the reconciler can deploy (it must exist)."""
    if source.is_dir():
        if image:
            return Said(
                f"{source} is a folder, but release.image runs a container image",
                f"give {IMAGE_ACCEPTED}, or remove release.image to deploy the folder as a release",
            )
        return None
    if not source.is_file():
        return Said(
            f"{source} is neither a folder nor a file", f"give {IMAGE_ACCEPTED if image else ACCEPTED}"
        )
    try:
        with source.open("rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        return Said(f"cannot read {source}: {exc.strerror}", "make it readable by the user running reconcile")
    seen = _looks_like(head)
    if seen == "tar":
        return None
    if image:
        return Said(f"{source} is {seen}", f"give {IMAGE_ACCEPTED}")
    repack = "repack it: tar czf NAME.tar.gz -C FOLDER ." if "archive" in seen else f"give {ACCEPTED}"
    return Said(f"{source} is {seen}; the reconciler deploys {ACCEPTED}", repack)


def source_problems(
    doc: SourceDoc,
    base_dir: Path,
    *,
    must_exist: bool,
    offline: bool,
    checksum: bool,
    skipped: Skipped,
) -> list[InputProblem]:
    """Problems with release.source. `must_exist`: a missing artifact is an error (a warning
    when `offline`: CI builds it later); else only an artifact that is there is looked at.
    `checksum`: compute the file's sha256 against release.sha256. What was not looked at is
    added to `skipped`."""
    release = doc.data.get("release") if isinstance(doc.data, dict) else None
    if not isinstance(release, dict) or not isinstance(release.get("source"), str):
        return []
    written = Path(release["source"])
    source = written if written.is_absolute() else base_dir / written
    image = isinstance(release.get("image"), str)
    at = ("release", "source")
    if not source.exists():
        if not must_exist:
            return []
        said = missing(source, image=image)
        if offline:
            skipped.artifacts.add(release["source"])
            later = "not built yet? `reconcile validate` without --offline checks it once it is"
            return [doc.problem(at, said.message, later, warning=True)]
        return [doc.problem(at, said.message, said.hint)]
    said_kind = kind_problem(source, image=image)
    if said_kind is not None:
        return [doc.problem(at, said_kind.message, said_kind.hint)]
    expected = release.get("sha256")
    if not isinstance(expected, str):
        return []
    if source.is_dir():
        return [
            doc.problem(
                ("release", "sha256"),
                f"is checked against an archive, and {release['source']} is a folder: it is not checked",
                "remove release.sha256, or deploy the folder as a .tar.gz",
                warning=True,
            )
        ]
    if checksum:
        actual = sha256_of(source)
        if actual != expected:
            said = checksum_mismatch(source, actual, expected)
            return [doc.problem(("release", "sha256"), said.message, said.hint)]
    return []


@dataclass(frozen=True)
class ReleaseView:
    """What a look inside a release folder or archive needs, and where each field is written:
    made from the document when those fields are sound (so it runs with the other checks,
    whatever else is wrong), or from a DesiredState when a run uploads."""

    file: str
    version: str
    source: Path
    command: tuple[str, ...]  # the backend's argv
    tasks: tuple[tuple[Path_, tuple[str, ...]], ...]  # (where, argv) of each release task
    static_dir: str | None  # the frontend folder Caddy serves from the release; None: none
    maintenance_page: str | None
    marks: Mapping[Path_, tuple[int, int]] = field(default_factory=dict, repr=False)

    def problem(self, path: Path_, message: str, hint: str = "", *, warning: bool = False) -> InputProblem:
        """At the field, or the mapping that would hold it; a field whose whole section is
        defaulted (no `frontend:` at all) is located at the release it is about."""
        at = path
        while at and at not in self.marks:
            at = at[:-1]
        mark = self.marks.get(at if at else ("release", "source"))
        line, column = (mark[0], mark[1]) if mark else (None, None)
        severity = "warning" if warning else "error"
        return InputProblem(self.file, line, column, dotted(path), message, hint, severity)

    @classmethod
    def of(cls, desired: DesiredState) -> ReleaseView | None:
        rel = desired.release
        if rel.source is None or rel.image is not None:
            return None
        fe = desired.frontend
        tasks = [
            (("release", "tasks", "before_switch", i), argv) for i, argv in enumerate(rel.tasks.before_switch)
        ]
        tasks += [
            (("release", "tasks", "after_switch", i), argv) for i, argv in enumerate(rel.tasks.after_switch)
        ]
        return cls(
            file=str(desired.file),
            version=rel.version,
            source=rel.source,
            command=desired.backend.command,
            tasks=tuple(tasks),
            static_dir=fe.static_dir if fe.mode == "static" and fe.image is None else None,
            maintenance_page=desired.proxy.maintenance_page,
            marks=desired.marks,
        )


def _related(a: str, b: str) -> bool:
    """One field is the other, or holds it; "" is the whole file, which holds them all."""
    return not a or a == b or a.startswith(b + ".") or b.startswith(a + ".") or a.startswith(b + "[")


def release_view(doc: SourceDoc, base_dir: Path, problems: list[InputProblem]) -> ReleaseView | None:
    """The view of a release folder or archive the document names, when nothing it needs was
    reported wrong; None for an image, a missing artifact, or fields with problems."""
    data: dict[str, Any] = doc.data if isinstance(doc.data, dict) else {}
    release, backend = data.get("release"), data.get("backend")
    if not isinstance(release, dict) or not isinstance(backend, dict) or "image" in release:
        return None
    needed = (
        "release.version",
        "release.source",
        "release.tasks",
        "backend.command",
        "frontend",
        "proxy.maintenance_page",
    )
    if any(p.is_error and any(_related(p.field, f) for f in needed) for p in problems):
        return None
    version, written, command = release.get("version"), release.get("source"), backend.get("command")
    if not (isinstance(version, str) and isinstance(written, str) and isinstance(command, str)):
        return None
    source = Path(written) if Path(written).is_absolute() else base_dir / written
    if not source.exists() or kind_problem(source, image=False) is not None:
        return None
    tasks: list[tuple[Path_, tuple[str, ...]]] = []
    listed: dict[str, Any] = release["tasks"] if isinstance(release.get("tasks"), dict) else {}
    for when in ("before_switch", "after_switch"):
        for i, text in enumerate(listed.get(when) or []):
            argv, _ = parse_command(text) if isinstance(text, str) else (None, None)
            tasks.append((("release", "tasks", when, i), tuple(argv or ())))
    frontend: dict[str, Any] = data["frontend"] if isinstance(data.get("frontend"), dict) else {}
    static = frontend.get("mode", "static") == "static" and "image" not in frontend
    page = data["proxy"].get("maintenance_page") if isinstance(data.get("proxy"), dict) else None
    return ReleaseView(
        file=doc.file,
        version=version,
        source=source,
        command=tuple(parse_command(command)[0] or ()),
        tasks=tuple(tasks),
        static_dir=frontend.get("static_dir", "frontend/dist") if static else None,
        maintenance_page=page,
        marks=dict(doc.marks),
    )
