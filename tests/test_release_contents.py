"""What a release may hold, checked on local temp folders: chains of symlinks that each look
inside the release but together lead out of it (in an archive the host receives, and in a
folder or archive source before anything is sent), and the modes a release gets."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from reconciler.agent.context import Context
from reconciler.agent.protocol import AgentError
from reconciler.agent.releases import do_upload_release
from reconciler.engine import artifact
from reconciler.errors import InvalidDesiredState
from reconciler.spec.load import load_bytes
from reconciler.spec.model import DesiredState

VERSION = "6.6.6"
N = 24  # more `..` than any temp or release folder is deep: the chains reach `/`


def folder(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info


def link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
    return info


def file(name: str, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info


def tarball(members: list[tarfile.TarInfo]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for m in members:
            if m.isfile():
                m.size = 2
                tar.addfile(m, io.BytesIO(b"hi"))
            else:
                tar.addfile(m)
    return buf.getvalue()


INDEX = file("index.html")  # every construction is otherwise a plausible release

# name -> (members, the member that leads out). Each link read alone as text stays inside.
CHAINS: dict[str, tuple[list[tarfile.TarInfo], str]] = {
    # `d -> .` used as a path component N times, then N `..`: the target is a host file.
    "dot-link-to-a-file": (
        [INDEX, link("d", "."), link("passwd", "d/" * N + "../" * N + "etc/passwd")],
        "passwd",
    ),
    # The same, ending at `/` itself: the whole host under the static site.
    "dot-link-to-a-folder": (
        [INDEX, link("d", "."), link("host", "d/" * N + "../" * (N - 1) + "..")],
        "host",
    ),
    # `s/up -> ..` leads back to the release's top, so `s/up/s/up/...` climbs nowhere.
    "dotdot-link-in-a-subfolder": (
        [INDEX, folder("s"), link("s/up", ".."), link("etc", "s/up/" * N + "../" * (2 * N) + "etc")],
        "etc",
    ),
    # Two links deep: `dd -> d/d`, `d -> .`.
    "chain-through-another-link": (
        [INDEX, link("d", "."), link("dd", "d/d"), link("x", "dd/" * N + "../" * N + "etc/passwd")],
        "x",
    ),
    # The link comes before the `.` link it goes through: a streamed data filter sees no chain.
    "link-before-the-link-it-uses": (
        [INDEX, link("passwd", "d/" * N + "../" * N + "etc/passwd"), link("d", ".")],
        "passwd",
    ),
    # `..` from the single top folder is the release; once that folder is flattened away,
    # it is the folder of all releases.
    "dotdot-from-a-flattened-top-folder": (
        [
            folder(f"choiros-{VERSION}"),
            file(f"choiros-{VERSION}/index.html"),
            link(f"choiros-{VERSION}/up", ".."),
        ],
        "up",
    ),
}


@pytest.fixture(params=["data-filter", "no-data-filter"])
def data_filter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """With PEP 706's filter (this Python) and without it, as on a host's older Python 3.9+
    (or the test hosts' Debian 3.11.2): the check of the extracted tree must hold alone."""
    if request.param == "no-data-filter":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return str(request.param)


def upload(tmp_path: Path, raw: bytes) -> Path:
    """Run the host agent's upload of `raw` as release VERSION; returns the releases folder."""
    releases = tmp_path / "opt" / "releases"
    ctx = Context({"observe": {"state": str(tmp_path / "state")}}, io.BytesIO(raw), lambda e: None)
    do_upload_release(ctx, {"releases": str(releases), "version": VERSION, "size": len(raw)})
    return releases


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_link_chains_in_an_archive_are_refused_before_the_release_is_renamed_into_place(
    name: str, data_filter: str, tmp_path: Path
) -> None:
    members, culprit = CHAINS[name]
    with pytest.raises(AgentError, match=f"refusing release.*'{culprit}'") as caught:
        upload(tmp_path, tarball(members))
    assert caught.value.code == "hostile"
    assert os.listdir(tmp_path / "opt" / "releases") == [], "a release or its staging was left"
    assert not (tmp_path / "state").exists(), "a release record was written"


def desired_with_source(tmp_path: Path, source: Path) -> DesiredState:
    text = f"""
app: choiros
target: local
release:
  version: "{VERSION}"
  source: {source}
backend:
  command: bin/app --port {{port}}
  port: 8080
"""
    return load_bytes(text.encode(), "desired-state.yaml", base_dir=tmp_path)


def materialise(members: list[tarfile.TarInfo], root: Path) -> None:
    """The construction as a folder on disk, as a CI job might leave it."""
    root.mkdir()
    for m in members:
        path = root / m.name
        path.parent.mkdir(parents=True, exist_ok=True)
        if m.isdir():
            path.mkdir(exist_ok=True)
        elif m.issym():
            path.symlink_to(m.linkname)
        else:
            path.write_bytes(b"hi")
            path.chmod(m.mode)


@pytest.mark.parametrize("kind", ["folder", "archive"])
@pytest.mark.parametrize("name", sorted(CHAINS))
def test_link_chains_in_a_source_are_refused_before_anything_is_sent(
    name: str, kind: str, tmp_path: Path
) -> None:
    members, culprit = CHAINS[name]
    if kind == "folder":
        source = tmp_path / "dist" / f"choiros-{VERSION}"
        source.parent.mkdir()
        materialise(members, source)
    else:
        source = tmp_path / f"choiros-{VERSION}.tar.gz"
        source.write_bytes(tarball(members))
    desired = desired_with_source(tmp_path, source)
    with pytest.raises(InvalidDesiredState) as caught:
        artifact.prepare(desired)
    message = str(caught.value)
    assert "release.source" in message and f"'{culprit}'" in message, message


def test_a_folder_source_with_links_inside_it_is_accepted(tmp_path: Path) -> None:
    source = tmp_path / "dist"
    materialise(
        [
            folder("bin"),
            file("bin/app", 0o755),
            link("current-bin", "bin"),
            link("here", "."),
            link("gone", "x"),
        ],
        source,
    )
    payload = artifact.prepare(desired_with_source(tmp_path, source))
    with payload.open() as fh:
        raw = fh.read()
    releases = upload(tmp_path, raw)
    assert (releases / VERSION / "current-bin" / "app").read_bytes() == b"hi"
    assert (releases / VERSION / "here" / "bin" / "app").exists()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_extraction_strips_group_and_other_write_and_special_bits(data_filter: str, tmp_path: Path) -> None:
    raw = tarball(
        [
            folder("open", 0o777),
            folder("sticky", 0o1777),
            folder("private", 0o700),
            file("open/run", 0o777),
            file("open/data", 0o666),
            file("setuid", 0o4755),
            file("setgid", 0o2775),
            file("plain", 0o600),
        ]
    )
    release = upload(tmp_path, raw) / VERSION
    modes = {str(p.relative_to(release)): mode_of(p) for p in release.rglob("*")}
    assert modes == {
        "open": 0o755,
        "sticky": 0o755,
        "private": 0o755,  # Caddy and backend.user must read it
        "open/run": 0o755,
        "open/data": 0o644,
        "setuid": 0o755,
        "setgid": 0o755,
        "plain": 0o644,
    }
    assert mode_of(release) == 0o755
