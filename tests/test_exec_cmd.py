"""`reconcile exec` on a real host, as root and over a login with passwordless sudo: sqlite3
on the app's database as backend.user, the command's exit status, a failing command that
changes nothing but the history record, a terminal when asked, Ctrl-C that leaves nothing
running, another release on the host, `target: local`, and a container of an image release."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.deploying import WATCHED_PATHS, Project, Run, reset_host, serves
from tests.operating import LOGINS, Running, command, make_sudo_user, processes, run, until
from tests.testhost import TestHost

pytestmark = pytest.mark.testhost

USER = "choiros-svc"
DB = "/var/lib/choiros/choiros.db"
HISTORY = "/var/lib/reconciler/choiros/history.jsonl"


@pytest.fixture(scope="module")
def deployed(
    testhost: TestHost, artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Project:
    """1.0.0 then 2.0.0 (symlink-swap, backend.user), once for the module; a note in the
    database. The tests change nothing but the history, which each checks line by line."""
    reset_host(testhost)
    make_sudo_user(testhost)
    testhost.exec(["bash", "-c", f"id -u {USER} || useradd --system --user-group --no-create-home {USER}"])
    project = Project(tmp_path_factory.mktemp("exec"), artifacts, testhost)
    for version in ("1.0.0", "2.0.0"):
        project.write(version, backend=f"command: bin/backend --port {{port}}\nport: 8080\nuser: {USER}")
        done = project.once()
        assert done.rc == 0, done.stdout + done.stderr
    assert serves(testhost) == "2.0.0"
    note = json.dumps({"text": "written through the API"})
    testhost.exec(["curl", "-sf", "-X", "POST", "-H", "Content-Type: application/json", "-d", note,
                   "http://127.0.0.1/api/notes"])  # fmt: skip
    return project


def history(host: TestHost) -> list[dict[str, object]]:
    return [json.loads(line) for line in (host.read(HISTORY) or b"").decode().splitlines()]


def exec_(
    project: Project, *argv: str, options: tuple[str, ...] = (), stdin: str | None = None, **kw: str
) -> Run:
    return run(command(project, "exec", *options, argv=argv, **kw), stdin=stdin)


@pytest.mark.parametrize("login", LOGINS)
def test_sqlite3_runs_on_the_database_as_the_backend_user_and_its_status_is_the_commands(
    deployed: Project, login: str
) -> None:
    host = deployed.host
    uid = host.exec(["id", "-u", USER]).stdout.strip()
    query = exec_(deployed, "sh", "-c", f"id -u && sqlite3 {DB} 'select text from notes'", login=login)
    assert query.rc == 0, query.stderr
    assert query.stdout == f"{uid}\nwritten through the API\n" and query.stderr == ""  # nothing of ours

    # A failing command changes nothing but the history: byte for byte.
    before = host.tree_state(WATCHED_PATHS)
    records = history(host)
    failing = exec_(deployed, "sh", "-c", "echo out$((6 * 7)) >&2; exit 3", login=login)
    assert (failing.rc, failing.stderr) == (3, "out42\n")
    after = host.tree_state(WATCHED_PATHS)
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert changed == {HISTORY}, changed
    new = history(host)
    assert new[: len(records)] == records and len(new) == len(records) + 1
    record = new[-1]
    assert record["kind"] == "exec" and record["exit"] == 3 and record["result"] == "failed"
    assert record["command"] == ["sh", "-c", "echo out$((6 * 7)) >&2; exit 3"]
    assert record["release"] == "2.0.0" and "@" in str(record["user"]) and record["started"]
    assert "out42" not in json.dumps(record)  # never its output

    # A failing statement leaves the data as it was (sqlite3 closing the last connection
    # checkpoints the write-ahead log, so -wal and -shm are SQLite's to change).
    dump = host.exec(["sqlite3", DB, ".dump"]).stdout
    before = host.tree_state(WATCHED_PATHS)
    broken = exec_(deployed, "sqlite3", DB, "update no_such_table set x = 1", login=login)
    assert broken.rc == 1 and "no such table: no_such_table" in broken.stderr
    after = host.tree_state(WATCHED_PATHS)
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert changed <= {HISTORY, f"{DB}-wal", f"{DB}-shm"} and after[DB] == before[DB], changed
    assert host.exec(["sqlite3", DB, ".dump"]).stdout == dump
    record = history(host)[-1]
    assert record["exit"] == 1 and record["command"] == ["sqlite3", DB, "update no_such_table set x = 1"]
    assert "no such table" not in json.dumps(record)  # never its output
    status = run(command(deployed, "status", login=login))
    assert "exec        by " in status.stdout and "'update no_such_table set x = 1' (exit 1)" in status.stdout


@pytest.mark.parametrize(
    ("login", "transport"), [("root", "paramiko"), ("sudo", "paramiko"), ("root", "openssh")]
)
def test_a_terminal_when_asked_and_stdin_when_interactive(
    deployed: Project, login: str, transport: str
) -> None:
    kw = {"login": login, "transport": transport}
    tty = exec_(deployed, "sh", "-c", "test -t 0 && test -t 1 && tty", options=("-t",), **kw)
    assert tty.rc == 0 and tty.stdout.startswith("/dev/pts/"), tty.stdout + tty.stderr
    plain = exec_(deployed, "sh", "-c", "test -t 1", **kw)  # stdin is no terminal here: plain
    assert plain.rc == 1, plain.stderr
    piped = exec_(deployed, "sqlite3", DB, options=("-i",), stdin="select count(*) from notes;\n", **kw)
    assert (piped.rc, piped.stdout) == (0, "1\n"), piped.stderr


@pytest.mark.parametrize(("transport", "tty"), [("paramiko", False), ("paramiko", True), ("openssh", True)])
def test_ctrl_c_stops_the_command_on_the_host_and_the_history_says_so(
    deployed: Project, transport: str, tty: bool
) -> None:
    host = deployed.host
    marker = str(1000 + uuid.uuid4().int % 1000)
    argv = command(deployed, "exec", *(["-t"] if tty else []), transport=transport, argv=("sleep", marker))
    running = Running(argv)
    try:
        until(lambda: any(line.endswith(f"sleep {marker}") for line in processes(host, "sleep")))
        code, err = running.interrupt()
    finally:
        running.kill()
    assert code == 130 and "interrupted" in err, err
    units = ["systemctl", "list-units", "--all", "--plain", "--no-legend", "reconciler-exec-*"]
    waited = until(lambda: processes(host, "sleep") == [] and host.exec(units).stdout.strip() == "")
    record = history(host)[-1]
    assert record["command"] == ["sleep", marker] and record["result"] == "interrupted"
    assert record["exit"] is None and "stopped:" in str(record["error"])
    print(
        f"\n{transport}{' -t' if tty else ''}: nothing left running {waited:.2f} s after Ctrl-C ({record['error']})"
    )


def test_another_release_on_the_host_and_one_that_is_not(deployed: Project) -> None:
    older = exec_(
        deployed, "sh", "-c", "pwd; echo $RECONCILER_RELEASE $DATABASE_PATH", options=("--release", "1.0.0")
    )
    assert older.rc == 0, older.stderr
    assert older.stdout.split() == ["/opt/choiros/releases/1.0.0", "1.0.0", DB]
    program = exec_(deployed, "bin/backend", "--migrate")  # a path inside the serving release
    assert program.rc == 0 and "at choiros 2.0.0's schema" in program.stderr

    before = deployed.host.tree_state(WATCHED_PATHS)
    missing = exec_(deployed, "true", options=("--release", "9.9.9"))
    assert missing.rc == 125 and missing.stdout == ""
    assert (
        "release 9.9.9 is not on" in missing.stderr and "releases on the host: 1.0.0, 2.0.0" in missing.stderr
    )
    assert deployed.host.tree_state(WATCHED_PATHS) == before  # not even a history line


def test_target_local_runs_it_in_this_process_with_a_terminal_of_its_own(deployed: Project) -> None:
    host = deployed.host
    share = Path(host.share) / "exec"
    share.mkdir(parents=True, exist_ok=True)
    (share / "desired-state.yaml").write_text((deployed.root / "desired-state.yaml").read_text())
    cli = [
        host.python,
        "-m",
        "reconciler",
        "exec",
        "--target",
        "local",
        "-f",
        "/share/exec/desired-state.yaml",
    ]
    env = {"PYTHONPATH": "/src", "HOME": "/root", "XDG_CACHE_HOME": "/tmp/cache"}
    plain = host.exec([*cli, "--", "sh", "-c", "id -u; test -t 1; exit 4"], env=env, check=False)
    assert plain.rc == 4 and plain.stdout.strip() == host.exec(["id", "-u", USER]).stdout.strip(), (
        plain.stderr
    )
    tty = host.exec([*cli, "-t", "--", "sh", "-c", "test -t 1 && exit 5"], env=env, check=False)
    assert tty.rc == 5, tty.stdout + tty.stderr
    assert [r["exit"] for r in history(host)[-2:]] == [4, 5]
    logs = host.exec([host.python, "-m", "reconciler", "logs", "--target", "local", "--file",
                      "/share/exec/desired-state.yaml", "-n", "3", "backend"], env=env, check=False)  # fmt: skip
    assert logs.rc == 0 and len(logs.stdout.splitlines()) == 3 and "choiros-backend" in logs.stdout


# Last: it resets the host the tests above share.
def test_in_an_image_release_a_container_of_its_image(project: Project, images: dict[str, Path]) -> None:
    from tests.test_images import write

    make_sudo_user(project.host)
    write(project, images, "1.0.0")
    assert project.once().rc == 0
    code = "import os, sqlite3; print(os.getcwd(), os.environ['RECONCILER_RELEASE']); "
    code += "db = sqlite3.connect(os.environ['DATABASE_PATH']); print(db.execute('select 6*7').fetchone()[0])"
    for login in LOGINS:
        inside = exec_(project, "python3", "-c", code, login=login)
        assert inside.rc == 0 and inside.stdout.split() == ["/app", "1.0.0", "42"], inside.stderr
        failing = exec_(project, "python3", "-c", "raise SystemExit(9)", login=login)
        assert failing.rc == 9, failing.stderr
    # --rm: the one-off containers are gone, the backend's remains
    assert project.host.exec(["podman", "ps", "-a", "--format", "{{.Image}}"]).stdout.count("choiros") == 1


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import sys

    from tests.deploying import REPO
    from tests.testhost import ensure_rootfs

    sys.path.insert(0, str(REPO / "examples" / "app"))
    from build_image import build_image  # type: ignore[import-not-found]

    out = tmp_path_factory.mktemp("images")
    return {"1.0.0": build_image("1.0.0", out, runtime_root=str(ensure_rootfs()))[0]}
