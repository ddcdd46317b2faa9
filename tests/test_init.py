"""`reconcile init`: a commented desired-state.yaml that validates as written, for every
strategy, frontend mode and kind of release; never over a file without --force."""

from __future__ import annotations

import itertools
import tarfile
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.spec.load import Checks, load

STRATEGIES = ["restart", "symlink-swap", "blue-green"]
FRONTENDS = ["static", "dev-server"]
RELEASES = ["folder", "image"]
IMAGE = "ghcr.io/acme/choiros-backend:1.4.2"
# The two combinations the contract refuses: blue-green switches a static frontend with the
# backend, and an image release serves its frontend statically.
REFUSED = {("blue-green", "dev-server", "folder"), ("blue-green", "dev-server", "image")}
REFUSED |= {(s, "dev-server", "image") for s in STRATEGIES}
COMBINATIONS = list(itertools.product(STRATEGIES, FRONTENDS, RELEASES))


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "choiros"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def build_release(folder: Path, app: str, version: str, frontend: str) -> None:
    """The release `init`'s file names, with what its comments say is inside."""
    tree = folder / "build"
    (tree / "bin").mkdir(parents=True)
    program = tree / "bin" / app
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    if frontend == "static":
        (tree / "frontend" / "dist").mkdir(parents=True)
        (tree / "frontend" / "dist" / "index.html").write_text("hi\n")
    else:
        (tree / "bin" / "frontend-dev").write_text("#!/bin/sh\n")
        (tree / "bin" / "frontend-dev").chmod(0o755)
    (folder / "dist").mkdir()
    with tarfile.open(folder / "dist" / f"{app}-{version}.tar.gz", "w:gz") as tar:
        tar.add(tree, arcname=".")


@pytest.mark.parametrize(
    ("strategy", "frontend", "release"), COMBINATIONS, ids=["-".join(c) for c in COMBINATIONS]
)
def test_init_writes_a_file_that_validates_and_loads_to_what_was_asked(
    folder: Path, capsys: pytest.CaptureFixture[str], strategy: str, frontend: str, release: str
) -> None:
    argv = ["init", "--app", "choiros", "--strategy", strategy, "--frontend", frontend]
    argv += ["--target", "ssh://deploy@203.0.113.7:2222"]
    if release == "image":
        argv += ["--image", IMAGE]
    code, out, err = run(capsys, *argv)
    path = folder / "desired-state.yaml"
    if (strategy, frontend, release) in REFUSED:
        assert code == 1 and not path.exists()
        assert err.startswith("error: --frontend dev-server with ")
        return
    assert (code, err) == (0, "")
    assert out.startswith(f"wrote desired-state.yaml: choiros {'1.4.2' if release == 'image' else '0.1.0'}, ")
    text = path.read_text()
    assert text.count("#") > 30, "every field is explained"

    desired = load(path, checks=Checks(offline=True))
    assert desired.app == "choiros" and desired.strategy == strategy
    assert str(desired.target) == "ssh://deploy@203.0.113.7:2222"
    assert desired.frontend.mode == frontend
    assert desired.data.sqlite == "/var/lib/choiros/choiros.db"
    assert {v.name: v.value for v in desired.env} == {"DATABASE_PATH": "/var/lib/choiros/choiros.db"}
    if release == "image":
        assert (desired.release.image, desired.release.source, desired.release.version) == (
            IMAGE,
            None,
            "1.4.2",
        )
        # Nothing to build: it validates as written, online, with no warning at all.
        assert run(capsys, "validate") == (
            0,
            f"desired-state.yaml: valid (choiros 1.4.2, {strategy}, target ssh://deploy@203.0.113.7:2222)\n",
            "",
        )
        return
    assert (
        desired.release.source == folder / "dist" / "choiros-0.1.0.tar.gz" and desired.release.image is None
    )
    # Before the build: valid offline, the one warning being the artifact not built yet.
    code, out, err = run(capsys, "validate", "--offline")
    assert code == 0 and "valid, offline" in out
    assert [line.split(": ")[2] for line in err.splitlines() if line.startswith("warning:")] == [
        "release.source"
    ]
    # Built as the comments say: valid, online, no warning.
    build_release(folder, "choiros", "0.1.0", frontend)
    assert run(capsys, "validate") == (
        0,
        f"desired-state.yaml: valid (choiros 0.1.0, {strategy}, target ssh://deploy@203.0.113.7:2222)\n",
        "",
    )


def test_init_never_overwrites_without_force(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = folder / "desired-state.yaml"
    path.write_text("app: mine\n")
    code, out, err = run(capsys, "init", "--app", "choiros")
    assert (code, out) == (1, "")
    assert err == "error: desired-state.yaml exists; nothing was written (--force overwrites it)\n"
    assert path.read_text() == "app: mine\n"
    assert run(capsys, "init", "--app", "choiros", "--force")[0] == 0
    assert "app: choiros" in path.read_text()
    assert [p.name for p in folder.iterdir()] == ["desired-state.yaml"], "no temporary file left behind"


def test_init_names_the_app_after_the_folder_and_says_what_to_do_next(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "init", "-f", "deploy/prod.yaml")
    assert code == 0
    assert out.splitlines() == [
        "wrote deploy/prod.yaml: choiros 0.1.0, symlink-swap, static frontend, target local",
        "next:",
        "  1. build the release into dist/choiros-0.1.0.tar.gz (bin/choiros and frontend/dist inside), or "
        "point release.source at your build",
        "  2. reconcile validate --offline -f deploy/prod.yaml   check the file before the build",
        "  3. reconcile validate -f deploy/prod.yaml             and after: the release, what is inside it, "
        "the secrets",
        "  4. reconcile --once --dry-run -f deploy/prod.yaml     what would change on the host, and why",
        "  5. reconcile --once -f deploy/prod.yaml               deploy; then commit prod.yaml",
    ]
    assert load(folder / "deploy" / "prod.yaml", checks=Checks(offline=True)).app == "choiros"


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--app", "Choir OS", "error: --app: expected a name of lower-case letters, digits and '-'"),
        ("--target", "ftp://host", "error: --target: expected `local`, `ssh://[user@]host[:port]`"),
        ("--image", "Not An Image", "error: --image: expected an image reference"),
    ],
)
def test_init_refuses_a_bad_option_saying_which(
    folder: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, says: str
) -> None:
    argv = ["init", option, value] + (["--app", "choiros"] if option != "--app" else [])
    code, out, err = run(capsys, *argv)
    assert (code, out) == (1, "") and err.startswith(says), err
    assert not (folder / "desired-state.yaml").exists()


def test_init_asks_for_a_name_when_the_folder_gives_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = tmp_path / "2024 release"
    odd.mkdir()
    monkeypatch.chdir(odd)
    code, _, err = run(capsys, "init")
    assert (
        code == 1
        and err
        == "error: cannot make an app name out of the folder '2024 release'; name it: reconcile init NAME\n"
    )


def test_init_takes_the_app_name_as_its_argument_too(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "init", "notes", "--strategy", "blue-green")
    assert code == 0 and out.startswith("wrote desired-state.yaml: notes 0.1.0, blue-green"), out
    assert load(folder / "desired-state.yaml", checks=Checks(offline=True)).app == "notes"
    code, _, err = run(capsys, "init", "Notes App", "--force")
    assert code == 1 and err.startswith("error: APP: expected a name of lower-case letters"), err
    with pytest.raises(SystemExit) as two:
        run(capsys, "init", "notes", "--app", "other", "--force")
    assert two.value.code == 2 and "two app names: 'notes' and --app 'other'" in capsys.readouterr().err
    assert load(folder / "desired-state.yaml", checks=Checks(offline=True)).app == "notes"


def test_init_does_not_replace_a_file_written_while_it_ran(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between init's look for the file and its write, an editor (or another init) writes it:
    that file stays, whole."""
    import reconciler.cli.init as init

    path = folder / "desired-state.yaml"
    real = init.check_bytes

    def and_meanwhile(*args: object, **kwargs: object) -> object:
        path.write_text("app: theirs\n")  # after the text is made, before it is written
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(init, "check_bytes", and_meanwhile)
    monkeypatch.setattr(Path, "exists", lambda self: False)  # the look happened before the write
    code, _, err = run(capsys, "init", "--app", "choiros")
    assert (
        code == 1 and err == "error: desired-state.yaml exists; nothing was written (--force overwrites it)\n"
    )
    assert path.read_text() == "app: theirs\n"
    assert sorted(p.name for p in folder.iterdir()) == ["desired-state.yaml"], "the temporary file was left"
