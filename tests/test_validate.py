"""`reconcile validate`: everything knowable without a host, in one pass, each problem at its
file:line:column with what to do; --offline for CI without secrets; --json one entry per
problem. And every run refuses the same bad input the same way, before any connection.

Offline and fast: the CLI runs in-process in a temporary folder. A run that must not connect
names ssh://root@127.0.0.1:1, a closed loopback port: reaching it would be a connection error,
not the input problem asserted.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyrage
import pytest
from pyrage import x25519

from reconciler.cli import main
from reconciler.engine import artifact
from reconciler.errors import InvalidDesiredState
from reconciler.spec.artifacts import sha256_of
from reconciler.spec.load import load

NO_HOST = "ssh://root@127.0.0.1:1"


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no age key of the machine's is found
    for var in ("RECONCILER_AGE_IDENTITY", "RECONCILER_AGE_IDENTITY_FILE", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def release_tree(root: Path, *, backend: bool = True, frontend: bool = True, executable: bool = True) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "VERSION").write_text("1.0.0\n")
    if backend:
        (root / "bin" / "backend").write_text("#!/bin/sh\n")
        (root / "bin" / "backend").chmod(0o755 if executable else 0o644)
    if frontend:
        (root / "frontend" / "dist").mkdir(parents=True)
        (root / "frontend" / "dist" / "index.html").write_text("hi\n")
    return root


def tarball(tree: Path, out: Path) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        tar.add(tree, arcname=".")
    return out


def write(folder: Path, body: str) -> Path:
    path = folder / "desired-state.yaml"
    path.write_text(body)
    return path


BASE = """\
app: choiros
target: local
release:
  version: "1.0.0"
  source: dist/choiros-1.0.0.tar.gz
backend:
  command: bin/backend --port {port}
  port: 8080
"""


def built(folder: Path) -> Path:
    """dist/choiros-1.0.0.tar.gz with bin/backend and frontend/dist: a release that deploys."""
    (folder / "dist").mkdir(exist_ok=True)
    return tarball(release_tree(folder / "build"), folder / "dist" / "choiros-1.0.0.tar.gz")


# --- one pass -----------------------------------------------------------------------------------

EVERYTHING_WRONG = """\
app: choiros
target: local
release:
  version: "1.0.0"
  source: dist/choiros-1.0.0.tar.gz
  sha256: 1111111111111111111111111111111111111111111111111111111111111111
backend:
  command: bin/backend --port {port}
  port: 80
environment:
  A: b
env:
  API_TOKEN: ${VALIDATE_TEST_UNSET}
  SIGNING_KEY: {from_file: secrets/signing.key}
  DB_PASSWORD: {from_age: secrets/prod.env.age, key: DB_PASSWORD}
  CORS: x
  CORS: y
"""


def test_every_problem_is_reported_in_one_pass_each_at_its_place(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(folder, EVERYTHING_WRONG)
    code, out, err = run(capsys, "validate")
    assert code == 1 and out == ""
    assert err.splitlines() == [
        "error: 8 problems in the desired state; nothing was changed:",
        f"  desired-state.yaml:5:11: release.source: {folder}/dist/choiros-1.0.0.tar.gz does not exist; "
        "build the release first (the path is relative to the desired-state file), or check it without "
        "artifacts: reconcile validate --offline",
        "  desired-state.yaml:6:11: release.sha256: expected 64 lower-case hex digits; got the number "
        "1111111111111111111111111111111111111111111111111111111111111111; YAML read it as a number or "
        "boolean; put it in quotes",
        "  desired-state.yaml:9:9: backend.port: port 80 is already used by the proxy site; choose another port",
        "  desired-state.yaml:10:1: environment: unknown field; did you mean 'env'? (allowed here: app, "
        "backend, blue_green, data, env, frontend, health, notify, paths, proxy, registry_auth, release, "
        "rollout, shared, strategy, target)",
        "  desired-state.yaml:13:14: env.API_TOKEN: the environment variable VALIDATE_TEST_UNSET is not set "
        "where reconcile runs; set it where reconcile runs (CI: from its secret store); `validate --offline` "
        "checks without it",
        f"  desired-state.yaml:14:3: env.SIGNING_KEY: cannot read {folder}/secrets/signing.key: No such file "
        "or directory; create the file on the machine running reconcile (a path is relative to the "
        "desired-state file)",
        f"  desired-state.yaml:15:27: env.DB_PASSWORD.from_age: cannot read {folder}/secrets/prod.env.age: "
        "No such file or directory; commit the encrypted file beside the desired state",
        "  desired-state.yaml:17:3: env.CORS: duplicate key 'CORS' (first defined on line 16); keep one of "
        "them: YAML tools disagree on which one counts",
    ]


def test_json_gives_one_entry_per_problem(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(folder, EVERYTHING_WRONG)
    code, out, _ = run(capsys, "validate", "--json")
    answer = json.loads(out)
    assert code == 1
    assert set(answer) == {
        "valid", "result", "file", "offline", "problems", "errors", "warnings", "skipped",
    }  # fmt: skip
    assert (answer["valid"], answer["result"], answer["errors"], answer["warnings"]) == (
        False,
        "invalid",
        8,
        0,
    )
    assert len(answer["problems"]) == 8
    assert answer["problems"][2] == {
        "file": "desired-state.yaml",
        "line": 9,
        "column": 9,
        "field": "backend.port",
        "message": "port 80 is already used by the proxy site",
        "hint": "choose another port",
        "severity": "error",
    }
    assert [(p["line"], p["column"], p["field"]) for p in answer["problems"]] == [
        (5, 11, "release.source"),
        (6, 11, "release.sha256"),
        (9, 9, "backend.port"),
        (10, 1, "environment"),
        (13, 14, "env.API_TOKEN"),
        (14, 3, "env.SIGNING_KEY"),
        (15, 27, "env.DB_PASSWORD.from_age"),
        (17, 3, "env.CORS"),
    ]


def test_a_valid_file_says_so_with_what_it_deploys(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    built(folder)
    write(folder, BASE)
    code, out, err = run(capsys, "validate")
    assert (code, out, err) == (
        0,
        "desired-state.yaml: valid (choiros 1.0.0, symlink-swap, target local)\n",
        "",
    )
    code, out, _ = run(capsys, "validate", "--json")
    answer = json.loads(out)
    assert answer["valid"] is True and answer["problems"] == [] and answer["version"] == "1.0.0"
    assert (answer["app"], answer["strategy"], answer["target"], answer["hosts"]) == (
        "choiros", "symlink-swap", "local", ["local"],
    )  # fmt: skip


# --- warnings -------------------------------------------------------------------------------------


def test_settings_that_do_nothing_are_warnings_and_still_valid(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    built(folder)
    write(folder, BASE + "blue_green:\n  idle: stop\nfrontend:\n  dev_port: 3000\n")
    code, out, err = run(capsys, "validate")
    assert code == 0
    assert err.splitlines() == [
        "warning: desired-state.yaml:9:1: blue_green: only applies to strategy blue-green; this file's "
        "strategy is symlink-swap (the default); remove the blue_green block, or set strategy: blue-green",
        "warning: desired-state.yaml:12:13: frontend.dev_port: only applies in dev-server mode; "
        "frontend.mode is static (the default); remove it, or set frontend.mode: dev-server",
    ]
    assert out == "desired-state.yaml: valid (choiros 1.0.0, symlink-swap, target local); 2 warnings\n"
    answer = json.loads(run(capsys, "validate", "--json")[1])
    assert answer["valid"] is True and answer["warnings"] == 2
    assert {p["severity"] for p in answer["problems"]} == {"warning"}


# --- artifacts ------------------------------------------------------------------------------------


def test_a_zip_is_refused_saying_what_is_deployed(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import zipfile

    (folder / "dist").mkdir()
    with zipfile.ZipFile(folder / "dist" / "choiros-1.0.0.zip", "w") as z:
        z.writestr("bin/backend", "#!/bin/sh\n")
    write(folder, BASE.replace(".tar.gz", ".zip"))
    code, _, err = run(capsys, "validate")
    assert code == 1
    assert (
        f"  desired-state.yaml:5:11: release.source: {folder}/dist/choiros-1.0.0.zip is a .zip archive; the "
        "reconciler deploys a folder or a tar archive (.tar.gz or .tgz; .tar, .tar.xz and .tar.bz2 work too); "
        "repack it: tar czf NAME.tar.gz -C FOLDER ."
    ) in err.splitlines()


def test_a_file_that_is_no_archive_is_refused(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "dist").mkdir()
    (folder / "dist" / "choiros-1.0.0.tar.gz").write_text("<html>404 Not Found</html>\n")
    write(folder, BASE)
    code, _, err = run(capsys, "validate")
    assert code == 1
    assert (
        f"desired-state.yaml:5:11: release.source: {folder}/dist/choiros-1.0.0.tar.gz is not an archive; "
        "the reconciler deploys a folder or a tar archive"
    ) in err


def test_the_checksum_is_computed(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = built(folder)
    actual = sha256_of(source)
    wrong = "0" * 63 + "1"
    write(
        folder,
        BASE.replace("  backend", "  backend").replace(".tar.gz\n", f'.tar.gz\n  sha256: "{wrong}"\n', 1),
    )
    code, _, err = run(capsys, "validate")
    assert code == 1
    assert (
        f"  desired-state.yaml:6:11: release.sha256: {source} has sha256 {actual}, but release.sha256 says "
        f"{wrong}; deploy the artifact that was checksummed, or put this one's `sha256sum` in release.sha256"
    ) in err.splitlines()
    write(folder, BASE.replace(".tar.gz\n", f'.tar.gz\n  sha256: "{actual}"\n', 1))
    assert run(capsys, "validate", "--require-checksum")[0] == 0


def test_require_checksum_still_requires_sha256_and_the_artifact(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(folder, BASE)
    code, _, err = run(capsys, "validate", "--require-checksum")
    assert code == 1
    lines = err.splitlines()
    # Located at the mapping where sha256 belongs, and the missing artifact in the same pass.
    assert (
        "  desired-state.yaml:3:1: release.sha256: required by --require-checksum; add the artifact's "
        "checksum (sha256sum FILE)"
    ) in lines
    assert any(line.startswith("  desired-state.yaml:5:11: release.source: ") for line in lines)
    # With a sha256 but no artifact, the artifact is still missing: a checksum proves nothing alone.
    write(folder, BASE.replace(".tar.gz\n", f'.tar.gz\n  sha256: "{"a" * 64}"\n', 1))
    code, _, err = run(capsys, "validate", "--require-checksum")
    assert code == 1 and "release.source: " in err and "does not exist" in err


def test_a_folder_release_with_a_sha256_warns_it_is_not_checked(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release_tree(folder / "build")
    write(folder, BASE.replace("dist/choiros-1.0.0.tar.gz\n", f'build\n  sha256: "{"a" * 64}"\n'))
    code, _, err = run(capsys, "validate")
    assert code == 0
    assert (
        "warning: desired-state.yaml:6:11: release.sha256: is checked against an archive, and build is a "
        "folder: it is not checked; remove release.sha256, or deploy the folder as a .tar.gz"
    ) in err.splitlines()


def test_an_image_source_must_be_an_image_archive(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    release_tree(folder / "build")
    image = BASE.replace(
        "  source: dist/choiros-1.0.0.tar.gz\n", "  image: localhost/choiros:1.0.0\n  source: build\n"
    )
    write(folder, image)
    code, _, err = run(capsys, "validate")
    assert code == 1
    assert (
        f"  desired-state.yaml:6:11: release.source: {folder}/build is a folder, but release.image runs a "
        "container image; give an image archive file (`podman save`, `docker save`) or a root-filesystem "
        "tar, or remove release.image to deploy the folder as a release"
    ) in err.splitlines()
    tarball(folder / "build", folder / "image.tar")
    write(folder, image.replace("source: build", "source: image.tar"))
    assert run(capsys, "validate")[0] == 0


def test_what_the_release_lacks_is_found_inside_it(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "dist").mkdir()
    tarball(
        release_tree(folder / "build", backend=False, frontend=False),
        folder / "dist" / "choiros-1.0.0.tar.gz",
    )
    tasks = "  tasks:\n    before_switch: [bin/migrate --up]\n"
    write(
        folder,
        BASE.replace(
            "  source: dist/choiros-1.0.0.tar.gz\n", "  source: dist/choiros-1.0.0.tar.gz\n" + tasks
        ),
    )
    code, _, err = run(capsys, "validate")
    assert code == 1
    assert err.splitlines() == [
        "warning: desired-state.yaml:5:11: frontend.static_dir: release 1.0.0 has no folder frontend/dist: Caddy "
        "would answer 404 for every path but the backend's; build the frontend into it, or set "
        "frontend.static_dir to where it is",
        "error: 2 problems in the desired state; nothing was changed:",
        "  desired-state.yaml:7:21: release.tasks.before_switch[0]: bin/migrate is not in release 1.0.0; "
        "build it into the release (chmod +x before packing), or fix the path: it is relative to the release",
        "  desired-state.yaml:9:12: backend.command: bin/backend is not in release 1.0.0; build it into the "
        "release (chmod +x before packing), or fix the path: it is relative to the release",
    ]


def test_a_backend_program_that_cannot_run_is_refused(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "dist").mkdir()
    tarball(release_tree(folder / "build", executable=False), folder / "dist" / "choiros-1.0.0.tar.gz")
    write(folder, BASE)
    code, _, err = run(capsys, "validate")
    assert code == 1
    assert (
        "  desired-state.yaml:7:12: backend.command: bin/backend is in release 1.0.0 but not executable; "
        in err
    )


def test_a_hostile_release_is_refused_at_its_source(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = release_tree(folder / "build")
    (tree / "etc").symlink_to("/etc")
    write(folder, BASE.replace("dist/choiros-1.0.0.tar.gz", "build"))
    code, _, err = run(capsys, "validate")
    assert code == 1
    assert (
        "  desired-state.yaml:5:11: release.source: refusing release archive: member 'etc': symlink to '/etc' points outside"
        in err
    )


def test_a_run_and_validate_say_the_same_about_a_missing_artifact(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run checks the artifact when it uploads it (a revert to a release the host keeps needs
    none): the same sentence, at the same place, as validate's."""
    write(folder, BASE)
    said = [line.strip() for line in run(capsys, "validate")[2].splitlines()[1:]]
    desired = load(folder / "desired-state.yaml")
    with pytest.raises(InvalidDesiredState) as caught:
        artifact.prepare(desired)
    assert [
        str(p).replace(str(folder / "desired-state.yaml"), "desired-state.yaml")
        for p in caught.value.problems
    ] == said


# --- --offline ------------------------------------------------------------------------------------

OFFLINE = """\
app: choiros
target: local
release:
  version: "1.0.0"
  source: dist/choiros-1.0.0.tar.gz
backend:
  command: bin/backend --port {port}
  port: 8080
env:
  API_TOKEN: ${VALIDATE_TEST_UNSET}
  OTHER: {from_env: VALIDATE_TEST_UNSET_TOO}
  SIGNING_KEY: {from_file: secrets/signing.key}
  DB_PASSWORD: {from_age: secrets/prod.env.age, key: DB_PASSWORD}
notify:
  - url: ${VALIDATE_TEST_HOOK}
    header: {name: Authorization, from_env: VALIDATE_TEST_HOOK_TOKEN}
"""


def secrets_folder(folder: Path) -> None:
    (folder / "secrets").mkdir()
    (folder / "secrets" / "signing.key").write_bytes(b"\xff\xfe not text")  # unreadable as a value
    key = x25519.Identity.generate()
    (folder / "secrets" / "prod.env.age").write_bytes(pyrage.encrypt(b"DB_PASSWORD=x\n", [key.to_public()]))


def test_offline_checks_a_file_without_secrets_keys_or_artifacts(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets_folder(folder)
    write(folder, OFFLINE)
    code, _, err = run(capsys, "validate")
    assert code == 1 and "7 problems" in err  # 4 variables, a file not text, no key, no artifact
    code, out, err = run(capsys, "validate", "--offline")
    assert code == 0
    assert err.splitlines() == [
        f"warning: desired-state.yaml:5:11: release.source: {folder}/dist/choiros-1.0.0.tar.gz does not exist; "
        "not built yet? `reconcile validate` without --offline checks it once it is",
        "skipped (--offline): environment variables not read: VALIDATE_TEST_HOOK, VALIDATE_TEST_HOOK_TOKEN, "
        "VALIDATE_TEST_UNSET, VALIDATE_TEST_UNSET_TOO; files not read (from_file): secrets/signing.key; "
        "encrypted files not decrypted (from_age): secrets/prod.env.age; artifacts not there to check: "
        "dist/choiros-1.0.0.tar.gz",
    ]
    assert (
        out == "desired-state.yaml: valid, offline (choiros 1.0.0, symlink-swap, target local); 1 warning\n"
    )
    answer = json.loads(run(capsys, "validate", "--offline", "--json")[1])
    assert answer["valid"] is True and answer["offline"] is True and len(answer["skipped"]) == 4


def test_offline_still_needs_the_files_to_exist_and_be_what_they_say(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "secrets").mkdir()
    (folder / "secrets" / "prod.env.age").write_text("DB_PASSWORD=plain text, not encrypted\n")
    write(folder, OFFLINE)
    code, _, err = run(capsys, "validate", "--offline")
    assert code == 1
    assert err.splitlines()[-2:] == [
        f"  desired-state.yaml:12:3: env.SIGNING_KEY: cannot read {folder}/secrets/signing.key: No such file or "
        "directory; create the file on the machine running reconcile (a path is relative to the desired-state file)",
        f"  desired-state.yaml:13:27: env.DB_PASSWORD.from_age: {folder}/secrets/prod.env.age is not an "
        "age-encrypted file; encrypt it with `age -r RECIPIENT` (`age-keygen -y KEYFILE` prints the recipient)",
    ]


# --- --limit --------------------------------------------------------------------------------------

FLEET = BASE.replace(
    "target: local\n",
    "target:\n  web:\n    - ssh://root@127.0.0.1:1\n    - {target: 'ssh://root@127.0.0.2:1', name: web2}\n  db: [ssh://root@127.0.0.3:1]\n",
)


def test_a_limit_naming_no_host_names_those_there_are(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    built(folder)
    write(folder, FLEET)
    assert run(capsys, "validate", "--limit", "web2,db")[0] == 0
    code, _, err = run(capsys, "validate", "--limit", "web3", "--limit", "web")
    assert code == 1
    assert err.splitlines()[1] == (
        "  desired-state.yaml:2:1: target: --limit names web3, which is neither a host nor a group of this "
        "file (hosts: 127.0.0.1, web2, 127.0.0.3; groups: db, web); name one of those, or add the host under target"
    )
    # A run refuses it the same way, before connecting to anything.
    code, _, run_err = run(capsys, "--once", "--limit", "web3")
    assert code == 1 and err.splitlines()[1] in run_err.splitlines()


# --- every run refuses what validate refuses ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        (
            BASE.replace("target: local", f"target: {NO_HOST}")
            + "data:\n  sqlite: /var/lib/choiros/choiros.db\nenv:\n  DATABASE_PATH: /var/lib/choiros/other.db\n",
            "  desired-state.yaml:10:11: data.sqlite: names /var/lib/choiros/choiros.db, but env.DATABASE_PATH "
            "(line 12) names /var/lib/choiros/other.db: the app opens the file its environment names, so "
            "snapshots and restores would miss its data; make data.sqlite and DATABASE_PATH the same file",
        ),
        (
            BASE.replace("target: local", f"target: {NO_HOST}").replace(".tar.gz", ".zip"),
            "  desired-state.yaml:5:11: release.source: ",
        ),
        (
            BASE.replace("target: local", f"target: {NO_HOST}") + "health:\n  timeout: 0.5\n",
            "  desired-state.yaml:10:12: health.timeout: the gate can never pass: it needs 1 s of good answers "
            "(health.stable) within a timeout of 0.5 s; make health.timeout longer than health.stable",
        ),
    ],
    ids=["database", "zip", "gate"],
)
def test_a_run_refuses_it_before_connecting(
    folder: Path, capsys: pytest.CaptureFixture[str], body: str, expect: str
) -> None:
    if ".zip" in body:
        (folder / "dist").mkdir()
        (folder / "dist" / "choiros-1.0.0.zip").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    write(folder, body)
    for argv in (("validate",), ("--once",), ("--once", "--dry-run"), ("status",)):
        code, out, err = run(capsys, *argv)
        assert code == 1, argv
        assert "nothing was changed" in err and any(line.startswith(expect) for line in err.splitlines()), err
        assert "127.0.0.1" not in err, "it tried to connect"
    answer = json.loads(run(capsys, "--once", "--json")[1])
    assert answer["result"] == "invalid" and answer["problems"][0]["severity"] == "error"


def test_a_run_prints_the_warnings_too(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(
        folder, BASE.replace("target: local", f"target: {NO_HOST}") + "rollout:\n  max_failed: 1\nport: 1\n"
    )
    code, _, err = run(capsys, "--once", "--dry-run")
    assert code == 1
    assert err.splitlines()[0] == (
        "warning: desired-state.yaml:9:1: rollout: only applies to several hosts; target names one; remove it, "
        "or list the hosts under target"
    )


# --- the command line -----------------------------------------------------------------------------


def test_help_lists_init_and_offline_validation(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "reconcile init --app NAME" in text and "reconcile validate --offline" in text
    with pytest.raises(SystemExit):
        main(["validate", "--help"])
    assert "--offline" in capsys.readouterr().out


def test_watch_mode_says_the_warnings_once_per_revision(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every pass loads the file; the warnings are logged when they appear or change, not at
    every drift tick."""
    from reconciler.engine import watch
    from reconciler.errors import TargetError

    said: list[tuple[str, str, dict[str, object]]] = []

    class Recorder:
        def __getattr__(self, level: str) -> object:
            return lambda event, **kw: said.append((level, event, kw))

    def no_host(_: object) -> watch.Executor:
        raise TargetError("no host in this test")

    monkeypatch.setattr(watch, "log", Recorder())
    body = BASE.replace("target: local", f"target: {NO_HOST}") + "rollout:\n  max_failed: 1\n"
    path = write(folder, body)
    loads: list[int] = []

    def loading() -> watch.DesiredState:
        loads.append(1)
        return load(path)

    watcher = watch.Watcher(path, loading, no_host, watch.WatchSettings())
    for _ in range(3):
        watcher.backoff.until = 0  # the failing host would otherwise hold the next pass back
        watcher.run_pass(["drift"])
    write(folder, body + "blue_green:\n  idle: stop\n")
    watcher.backoff.until = 0
    watcher.run_pass(["file changed"])
    assert len(loads) == 4, "every pass loaded the file"
    logged = [kw["warnings"] for level, event, kw in said if event == "settings that do nothing"]
    assert [len(w) for w in logged] == [1, 2], logged  # type: ignore[arg-type]
    assert all(level == "warning" for level, event, _ in said if event == "settings that do nothing")


README_EXAMPLE = """\
app: choiros
target: ssh://root@203.0.113.10
release:
  version: "1.4.2"
  source: dist/choiros-1.4.2.tar.gz
backend:
  command: bin/backend --port {port}
  port: 80
environment:
  CORS_ALLOW_ORIGINS: https://choir.example
blue_green:
  idle: stop
data:
  sqlite: /var/lib/choiros/choiros.db
env:
  DATABASE_PATH: /var/lib/choiros/app.db
  API_TOKEN: ${DEPLOY_API_TOKEN}
"""


def test_the_readme_shows_what_validate_prints(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEPLOY_API_TOKEN", raising=False)
    (folder / "dist").mkdir()
    tarball(release_tree(folder / "build"), folder / "dist" / "choiros-1.4.2.tar.gz")
    write(folder, README_EXAMPLE)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    shown = readme.split("a leftover block (the release was built):\n\n```\n", 1)[1].split("```", 1)[0]
    code, _, err = run(capsys, "validate")
    assert code == 1 and err == shown
    code, _, err = run(capsys, "validate", "--offline")
    assert code == 1 and "skipped (--offline): environment variables not read: DEPLOY_API_TOKEN" in err
    assert "`skipped (--offline): environment variables not read: DEPLOY_API_TOKEN`" in readme
    answer = json.loads(run(capsys, "validate", "--json")[1])
    assert (answer["errors"], answer["warnings"]) == (4, 1)
    assert answer["problems"][0] == {
        "file": "desired-state.yaml",
        "line": 8,
        "column": 9,
        "field": "backend.port",
        "message": "port 80 is already used by the proxy site",
        "hint": "choose another port",
        "severity": "error",
    }
