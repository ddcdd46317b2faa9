"""Wheelhouse for the venv inside the test host.

The host has no route to any package registry, so its venv is installed offline
from wheels downloaded here. The wheels must fit the *container's* interpreter
(Debian bookworm's CPython 3.11, glibc 2.36), not the one running this code,
hence the explicit --python-version/--abi/--platform.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.testhost.errors import TesthostError
from tests.testhost.layout import REPO_ROOT

CONTAINER_PYTHON_VERSION = "3.11"
CONTAINER_ABI = "cp311"
#: bookworm has glibc 2.36; pip does not expand manylinux_2_X tags to older ones
#: by itself, so every compatible tag is listed.
CONTAINER_PLATFORMS: tuple[str, ...] = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)


def runtime_requirements(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    """The project's runtime dependencies, read from pyproject so the host's venv
    always matches what the project declares (PyYAML, jsonschema, paramiko, ...)."""
    try:
        data = tomllib.loads(pyproject.read_text())
        deps = data["project"]["dependencies"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise TesthostError(f"cannot read [project].dependencies from {pyproject}: {exc}") from exc
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise TesthostError(f"[project].dependencies in {pyproject} is not a list of strings")
    return list(deps)


def download(dest: Path, requirements: list[str], log_path: Path) -> list[str]:
    """Download binary wheels for the container into dest; return their file names."""
    dest.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "pip", "download",
        "--disable-pip-version-check", "--no-input",
        "--dest", str(dest),
        "--only-binary=:all:",
        "--implementation", "cp",
        "--python-version", CONTAINER_PYTHON_VERSION,
        "--abi", CONTAINER_ABI,
        *(arg for platform in CONTAINER_PLATFORMS for arg in ("--platform", platform)),
        *requirements,
    ]  # fmt: skip
    with log_path.open("wb") as log:
        try:
            rc = subprocess.run(
                argv, stdout=log, stderr=subprocess.STDOUT, timeout=600, check=False
            ).returncode
        except subprocess.TimeoutExpired as exc:
            raise TesthostError(f"pip download timed out; log: {log_path}") from exc
    if rc != 0:
        text = log_path.read_text(errors="replace").splitlines()[-30:]
        raise TesthostError(
            f"pip download of {' '.join(requirements)} failed (rc={rc}) with "
            f"{sys.executable}:\n" + "\n".join(text)
        )
    return sorted(p.name for p in dest.glob("*.whl"))
