"""ansible-core and pyinfra: venvs on this machine (pip from PyPI) and inside the test host.

The host has no route to any registry, so its venvs are installed offline from a wheelhouse
downloaded here for the host's CPython 3.11 (tests/testhost/wheels.py does the same for the
host's own venv). Versions are pinned so RESULTS.md can be reproduced: the newest releases
whose controller side still runs on Python 3.11 (ansible-core 2.20 wants 3.12).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.peers.paths import HOST_SHARE, HOST_VENVS, WORK

PINS = {"ansible": "ansible-core==2.19.14", "pyinfra": "pyinfra==3.10.0"}
EXECUTABLES = {"ansible": "ansible-playbook", "pyinfra": "pyinfra"}
DISTRIBUTIONS = {"ansible": "ansible-core", "pyinfra": "pyinfra"}


class InstallError(RuntimeError):
    pass


@dataclass(frozen=True)
class Peer:
    name: str  # ansible | pyinfra
    venv: Path  # on this machine

    @property
    def bin(self) -> str:
        return str(self.venv / "bin")

    @property
    def host_bin(self) -> str:
        return f"{HOST_VENVS[self.name]}/bin"


def venv_dir(name: str) -> Path:
    return WORK / f"venv-{name}"


def is_installed(name: str) -> bool:
    """The venv exists and holds exactly the pinned release (a marker written after pip)."""
    marker = venv_dir(name) / ".bench-pin"
    return marker.is_file() and marker.read_text().strip() == PINS[name]


def ensure_local(name: str, *, allow_install: bool = True) -> Peer | None:
    """A venv with the pinned peer; None when missing and installing is not allowed."""
    venv = venv_dir(name)
    if is_installed(name):
        return Peer(name, venv)
    if not allow_install:
        return None
    if venv.exists():
        shutil.rmtree(venv)
    log = WORK / f"install-{name}.log"
    WORK.mkdir(parents=True, exist_ok=True)
    # The base interpreter, not a venv's: `python -m venv` from inside a venv would nest.
    base = getattr(sys, "_base_executable", sys.executable)
    with log.open("wb") as out:
        for argv in (
            [base, "-m", "venv", str(venv)],
            [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", PINS[name]],
        ):
            rc = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, timeout=900, check=False
            ).returncode
            if rc != 0:
                raise InstallError(f"{' '.join(argv)} failed (rc={rc}); see {log}")
    (venv / ".bench-pin").write_text(PINS[name] + "\n")
    return Peer(name, venv)


def version_of(python: str, distribution: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    return out.stdout.strip() or "?"


def wheelhouse(names: list[str]) -> Path:
    """Wheels for the host's CPython 3.11 (cached: the pins decide the content)."""
    from tests.testhost import wheels

    dest = WORK / "wheels-cp311"
    marker = dest / ".bench-pins"
    wanted = "\n".join(sorted(PINS[n] for n in names))
    if marker.is_file() and marker.read_text() == wanted:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    wheels.download(dest, [PINS[n] for n in names], WORK / "wheels.log")
    marker.write_text(wanted)
    return dest


def install_in_host(host: object, share: Path, names: list[str]) -> None:
    """Offline venvs for the peers inside the host, from the wheelhouse placed in its /share."""
    from tests.testhost import TestHost

    assert isinstance(host, TestHost)
    source = wheelhouse(names)
    target = share / "wheels"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    for name in names:
        venv = HOST_VENVS[name]
        host.exec(["python3", "-m", "venv", venv], timeout=120)
        host.exec(
            [
                f"{venv}/bin/pip", "install", "--disable-pip-version-check", "--no-index",
                "--find-links", f"{HOST_SHARE}/wheels", PINS[name],
            ],
            timeout=600,
        )  # fmt: skip
