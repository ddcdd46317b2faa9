"""The wheel and sdist that .ci/run builds: what they carry, and the wheel installed by name into
a clean virtualenv on this machine, runnable from anywhere. tests/test_install_bullseye.py
installs the same wheel on a Debian 11 server (python3 3.9) and runs watch mode there."""

from __future__ import annotations

import email.parser
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import reconciler
from tests.deploying import REPO
from tests.distribution import NAME, Distribution, Interpreter, wheelhouse

pytestmark = pytest.mark.slow


def package_files() -> dict[str, bytes]:
    """Every file of the import package as git tracks it, by its path in a wheel; the schema
    is a link to schemas/ in the repository and a file in the package."""
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "reconciler"], capture_output=True, text=True, check=True
    ).stdout.split()
    return {name: (REPO / name).read_bytes() for name in tracked}


def test_the_wheel_carries_the_package_the_schema_and_the_command(distribution: Distribution) -> None:
    with zipfile.ZipFile(distribution.wheel) as wheel:
        names = wheel.namelist()
        info = f"deploy_reconciler-{reconciler.__version__}.dist-info"
        carried = {n: wheel.read(n) for n in names if not n.startswith(info)}
        metadata = email.parser.BytesParser().parsebytes(wheel.read(f"{info}/METADATA"), headersonly=True)
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    expected = package_files()
    assert "reconciler/schema/desired-state.schema.json" in expected
    assert "reconciler/agent/main.py" in expected
    assert sorted(carried) == sorted(expected), "the wheel carries exactly the package's files"
    assert carried == expected, "with the bytes of the repository's files"
    assert metadata["Name"] == NAME and metadata["Version"] == reconciler.__version__
    assert metadata["Requires-Python"] == ">=3.9"
    assert "reconcile = reconciler.cli:main" in entry_points


def test_the_sdist_carries_what_builds_the_same_wheel(distribution: Distribution) -> None:
    """`python -m build` made the wheel from this sdist: both hold the package's files, the
    schema as a plain file (not the repository's link), and no half of the test suite."""
    top = f"deploy_reconciler-{reconciler.__version__}"
    with tarfile.open(distribution.sdist) as sdist:
        members = {m.name.removeprefix(f"{top}/"): m for m in sdist.getmembers()}
        schema = members["reconciler/schema/desired-state.schema.json"]
        assert schema.isfile(), "the schema is a file in the sdist, not a link out of it"
        carried = {
            name: sdist.extractfile(m).read()  # type: ignore[union-attr]
            for name, m in members.items()
            if name.startswith("reconciler/") and m.isfile()
        }
    assert carried == package_files()
    assert {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO"} <= set(members)
    assert not [name for name in members if name.startswith("tests")]


@pytest.fixture(scope="module")
def installed(distribution: Distribution, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed as a server without the index would: from a
    wheelhouse (`pip download` where the index is reachable), `pip install --no-index`."""
    root = tmp_path_factory.mktemp("installed")
    house = root / "wheels"
    wheelhouse(house, [str(distribution.wheel)], Interpreter.running(), root / "pip-download.log")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [venv / "bin/pip", "install", "-q", "--no-index", "--find-links", house, NAME],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return venv


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Nothing of this repository on the path: only what the wheel installed answers.
    env = {"PATH": f"{venv}/bin:/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8"}
    return subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )


def test_the_installed_command_validates_the_example(installed: Path, tmp_path: Path) -> None:
    version = run(installed, "reconcile", "--version", cwd=tmp_path)
    assert (version.returncode, version.stdout.strip()) == (0, f"reconcile {reconciler.__version__}")
    where = run(installed, "python", "-c", "import reconciler; print(reconciler.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(str(installed)), where.stdout

    # The README's example as a user's folder has it: the file, and the release it names built.
    shutil.copy(REPO / "desired-state.yaml", tmp_path / "desired-state.yaml")
    build = [sys.executable, str(REPO / "examples/app/build.py"), "1.0.0", "--out", "examples/app/dist"]
    subprocess.run(build, cwd=tmp_path, check=True, capture_output=True)
    valid = run(installed, "reconcile", "validate", cwd=tmp_path)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert valid.stdout.startswith("desired-state.yaml: valid (choiros 1.0.0, symlink-swap, target local)")


def test_the_installed_command_finds_its_schema_and_refuses_a_bad_file(
    installed: Path, tmp_path: Path
) -> None:
    """The schema came with the wheel: an unknown field is refused at its line and column."""
    text = (
        (REPO / "desired-state.yaml").read_text().replace("strategy: symlink-swap", "stratgy: symlink-swap")
    )
    (tmp_path / "desired-state.yaml").write_text(text)
    line = next(n for n, s in enumerate(text.splitlines(), 1) if s.startswith("stratgy:"))
    refused = run(installed, "reconcile", "validate", cwd=tmp_path)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert re.search(
        rf"^  desired-state.yaml:{line}:\d+: stratgy: unknown field; did you mean 'strategy'\?",
        refused.stderr,
        re.M,
    ), refused.stderr
    assert "nothing was changed" in refused.stderr


def test_pip_refuses_the_wheel_for_a_python_older_than_3_9(
    distribution: Distribution, tmp_path: Path
) -> None:
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--no-deps",
            "--no-index",
            "--only-binary=:all:",
            "--python-version",
            "3.8",
            "--target",
            str(tmp_path / "t"),
            str(distribution.wheel),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode != 0
    assert "requires a different Python: 3.8.0 not in '>=3.9'" in refused.stderr, refused.stderr
