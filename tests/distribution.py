"""The project as users install it: the wheel and sdist `.ci/run` builds into dist/, and the
wheels of its dependencies for an interpreter that may not be this one (a server's python3
3.9, without network), as `pip download` on a machine that has the index makes them."""

from __future__ import annotations

import email.parser
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import reconciler
from tests.deploying import REPO

NAME = "deploy-reconciler"
#: What goes into the wheel and sdist: a newer file than the wheel in dist/ means it is stale.
SOURCES = ("reconciler", "schemas", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in")


@dataclass(frozen=True)
class Distribution:
    wheel: Path
    sdist: Path


def _newest_source() -> float:
    newest = 0.0
    for name in SOURCES:
        path = REPO / name
        files = [p for p in path.rglob("*") if "__pycache__" not in p.parts] if path.is_dir() else [path]
        newest = max([newest, *(p.stat().st_mtime for p in files if p.is_file())])
    return newest


def built(scratch: Path) -> Distribution:
    """dist/'s wheel and sdist of this version when they are newer than every source file (as
    .ci/run leaves them); otherwise a fresh build into `scratch`: tests never judge a stale
    wheel, and never write into the repository."""
    stem = f"{NAME.replace('-', '_')}-{reconciler.__version__}"
    found = Distribution(REPO / "dist" / f"{stem}-py3-none-any.whl", REPO / "dist" / f"{stem}.tar.gz")
    if all(p.is_file() and p.stat().st_mtime >= _newest_source() for p in (found.wheel, found.sdist)):
        return found
    # From the files git has (or would add), as a clean clone has them: setuptools also
    # ships what an earlier build's *.egg-info listed, which would hide a file the
    # configuration no longer includes.
    source = scratch / "source"
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        origin = REPO / name
        if origin.is_file() or origin.is_symlink():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, source / name, follow_symlinks=False)
    # As .ci/run builds: the sdist first, then the wheel from the unpacked sdist.
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(scratch), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return Distribution(scratch / found.wheel.name, scratch / found.sdist.name)


@dataclass(frozen=True)
class Interpreter:
    """Where wheels must run: pip download's --python-version/--abi/--platform, and the
    environment markers of dependencies are evaluated for it (pip evaluates them for the
    interpreter running pip: on 3.11, anyio's `exceptiongroup; python_version < "3.11"`
    would be left out for a 3.9 server)."""

    python_version: str  # "3.9"
    python_full_version: str  # "3.9.2"
    glibc_minor: int  # 31 for glibc 2.31

    @classmethod
    def running(cls) -> Interpreter:
        """The interpreter running this code, on this machine's C library."""
        glibc = os.confstr("CS_GNU_LIBC_VERSION") or "glibc 2.17"  # "glibc 2.36"
        minor = int(glibc.split()[1].split(".")[1])
        return cls(f"{sys.version_info[0]}.{sys.version_info[1]}", platform.python_version(), minor)

    @property
    def abi(self) -> str:
        return "cp" + self.python_version.replace(".", "")

    def platforms(self) -> list[str]:
        # pip does not expand manylinux_2_X to the older tags a system also runs: list them.
        newest = [f"manylinux_2_{minor}_x86_64" for minor in range(self.glibc_minor, 4, -1)]
        return [*newest, "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]

    def markers(self) -> dict[str, str]:
        return {
            "python_version": self.python_version,
            "python_full_version": self.python_full_version,
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": "x86_64",
            "os_name": "posix",
            "extra": "",
        }


#: Debian 11 (bullseye): python3 3.9.2, glibc 2.31.
BULLSEYE = Interpreter("3.9", "3.9.2", 31)
#: Ubuntu 22.04 (jammy) with its updates: python3 3.10.12, glibc 2.35.
JAMMY = Interpreter("3.10", "3.10.12", 35)
#: The servers a test host boots, by release, as the README's server install meets them.
SERVERS = {"bullseye": BULLSEYE, "jammy": JAMMY}


def _requirements_of(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.BytesParser().parsebytes(zf.read(name), headersonly=True)
    return [Requirement(line) for line in metadata.get_all("Requires-Dist") or []]


def _names_in(folder: Path) -> set[str]:
    return {canonicalize_name(re.split(r"-", p.name, maxsplit=1)[0]) for p in folder.glob("*.whl")}


def wheelhouse(dest: Path, requirements: list[str], target: Interpreter, log: Path) -> list[str]:
    """Binary wheels of `requirements` and everything they need on `target`, into dest.

    pip resolves for the target's tags and Requires-Python; what a dependency needs only on
    the target's Python (a marker) is found by reading each wheel's metadata with the
    target's markers, and downloaded in another round until nothing is missing."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted, only = list(requirements), []
    for _round in range(5):
        argv = [
            sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
            "--dest", str(dest), "--only-binary=:all:", "--implementation", "cp",
            "--python-version", target.python_version, "--abi", target.abi,
            *(arg for platform in target.platforms() for arg in ("--platform", platform)),
            *only, *wanted,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        with log.open("a") as out:
            out.write(done.stdout + done.stderr)
        assert done.returncode == 0, f"pip download failed:\n{done.stderr[-3000:]}"
        have = _names_in(dest)
        missing: dict[str, str] = {}
        for wheel in dest.glob("*.whl"):
            for req in _requirements_of(wheel):
                if canonicalize_name(req.name) in have:
                    continue
                if req.marker is None or req.marker.evaluate(target.markers()):
                    req.marker = None  # pip would evaluate it for this interpreter again
                    missing[canonicalize_name(req.name)] = str(req)
        if not missing:
            return sorted(p.name for p in dest.glob("*.whl"))
        # Only what the first round left out; what those need is checked in the next round.
        wanted, only = sorted(missing.values()), ["--no-deps"]
    raise AssertionError(f"the wheelhouse for {target} did not settle: still missing {sorted(missing)}")
