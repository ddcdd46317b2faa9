"""`reconcile logs` on a real host, as root and over a login with passwordless sudo: following
shows a line the backend writes after it started, Ctrl-C leaves no journalctl behind, --json
passes journald's fields, a release task's output is in the journal of its unit, a bad --since
is refused, and across a fleet every line says which host it came from."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploying import WATCHED_PATHS, Project, reset_host, serves
from tests.operating import LOGINS, Running, command, make_sudo_user, processes, run, until
from tests.testhost import TestHost, boot

pytestmark = pytest.mark.testhost

TASKS = "  tasks:\n    before_switch: [bin/backend --migrate]\n"


@pytest.fixture(scope="module")
def deployed(
    testhost: TestHost, artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Project:
    """1.0.0 deployed once for the module, with a migration task; the tests only read."""
    reset_host(testhost)
    make_sudo_user(testhost)
    project = Project(tmp_path_factory.mktemp("logs"), artifacts, testhost)
    body = project.render("1.0.0")
    project.write(body=body.replace("  source:", TASKS + "  source:", 1))
    first = project.once()
    assert first.rc == 0, first.stdout + first.stderr
    assert serves(testhost) == "1.0.0"
    return project


@pytest.mark.parametrize(
    ("login", "transport"), [("root", "paramiko"), ("sudo", "paramiko"), ("root", "openssh")]
)
def test_follow_shows_a_new_line_and_ctrl_c_leaves_no_journalctl(
    deployed: Project, login: str, transport: str
) -> None:
    host = deployed.host
    assert processes(host, "journalctl") == []
    follower = Running(
        command(deployed, "logs", "-f", "-n", "0", "backend", login=login, transport=transport)
    )
    try:
        # following has started on the host (or the CLI ended, which the next line reports)
        until(lambda: len(processes(host, "journalctl")) == 1 or follower.proc.poll() is not None)
        assert follower.proc.poll() is None, follower.proc.communicate()
        marker = uuid.uuid4().hex
        assert host.http(f"/api/version?marker={marker}").status == 200  # the backend logs each request
        line = follower.wait_for(lambda text: marker in text)
        assert " choiros-backend[" in line and f"GET /api/version?marker={marker}" in line
        code, err = follower.interrupt()
    finally:
        follower.kill()
    assert code == 130 and "interrupted" in err, err
    waited = until(lambda: processes(host, "journalctl") == [], timeout=10)
    print(f"\n{login} over {transport}: journalctl gone {waited:.2f} s after the CLI ended")


@pytest.mark.parametrize("login", LOGINS)
def test_json_lines_are_journald_entries(deployed: Project, login: str) -> None:
    out = run(command(deployed, "logs", "--json", "-n", "20", "backend", login=login))
    assert out.rc == 0, out.stderr
    entries = [json.loads(line) for line in out.stdout.splitlines()]
    assert 0 < len(entries) <= 20
    for entry in entries:
        assert {"MESSAGE", "__REALTIME_TIMESTAMP", "__CURSOR", "_HOSTNAME", "PRIORITY"} <= set(entry), entry
    own = [e for e in entries if e.get("_SYSTEMD_UNIT") == "choiros-backend.service"]
    assert own and all(e["_SYSTEMD_UNIT"] == "choiros-backend.service" or e.get("UNIT") for e in entries)
    assert all("host" not in e for e in entries)  # one host: journald's fields, nothing added


def test_a_release_tasks_output_is_in_its_units_journal(deployed: Project) -> None:
    out = run(command(deployed, "logs", "tasks"))
    assert out.rc == 0, out.stderr
    task = [line for line in out.stdout.splitlines() if "reconciler-task-choiros-" in line]
    assert any("systemd[1]: Started reconciler-task-choiros-" in line for line in task), out.stdout
    said = [line for line in task if " backend: " in line]
    assert said and "is at choiros 1.0.0's schema" in said[-1], out.stdout
    everything = run(command(deployed, "logs", "-n", "500"))
    assert said[-1] in everything.stdout.splitlines()  # all units by default


def test_a_time_journalctl_cannot_read_is_refused_and_changes_nothing(deployed: Project) -> None:
    before = deployed.host.tree_state(WATCHED_PATHS)
    out = run(command(deployed, "logs", "--since", "the day before yesterday's lunch"))
    assert out.rc == 1 and out.stdout == ""
    assert "Failed to parse timestamp" in out.stderr and '"10 min ago"' in out.stderr, out.stderr
    assert deployed.host.tree_state(WATCHED_PATHS) == before


@pytest.fixture(scope="module")
def second_host() -> Iterator[TestHost]:
    with boot() as host:
        yield host


def test_a_fleets_lines_say_their_host_and_exec_runs_on_the_one_named(
    deployed: Project, second_host: TestHost, tmp_path: Path
) -> None:
    reset_host(second_host)
    hosts = {"web1": deployed.host, "web2": second_host}
    targets = "".join(f"  - {{target: {h.ssh_target}, name: {n}}}\n" for n, h in hosts.items())
    body = deployed.render("1.0.0").replace(f"target: {deployed.host.ssh_target}\n", f"target:\n{targets}")
    fleet = tmp_path / "desired-state.yaml"
    fleet.write_text(body)
    known = tmp_path / "known_hosts"
    known.write_text("".join(h.known_hosts.read_text() for h in hosts.values()))
    keys = [a for h in hosts.values() for a in ("--identity", str(h.key_path))]

    def reconcile(*args: str, argv: tuple[str, ...] = ()) -> tuple[int, str, str]:
        cli = [
            sys.executable,
            "-m",
            "reconciler",
            *args,
            "--file",
            str(fleet),
            *keys,
            "--known-hosts",
            str(known),
        ]
        done = run([*cli, "--", *argv] if argv else cli)
        return done.rc, done.stdout, done.stderr

    code, out, err = reconcile("--once")
    assert code == 0, out + err
    code, out, err = reconcile("logs", "-n", "3", "backend")
    assert code == 0, err
    lines = out.splitlines()
    assert {line.split(" | ")[0] for line in lines} == {"web1", "web2"}, out
    code, out, err = reconcile("logs", "-n", "2", "--json", "backend")
    assert code == 0 and {json.loads(line)["host"] for line in out.splitlines()} == {"web1", "web2"}
    code, out, err = reconcile("exec", "--limit", "web2", argv=("cat", "/proc/sys/kernel/hostname"))
    assert code == 0, err
    assert out.strip() == second_host.exec(["cat", "/proc/sys/kernel/hostname"]).stdout.strip() != ""
    code, out, err = reconcile("exec", argv=("true",))
    assert code == 125 and "pick one with --limit NAME" in err


FOLLOW = """\
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)  # started in the background by sh, which ignores it
os.execv(sys.executable, [sys.executable, "-m", "reconciler", *sys.argv[1:]])
"""


def test_target_local_follows_in_process_and_ctrl_c_ends_its_journalctl(deployed: Project) -> None:
    host = deployed.host
    share = Path(host.share) / "logs"
    share.mkdir(parents=True, exist_ok=True)
    (share / "desired-state.yaml").write_text((deployed.root / "desired-state.yaml").read_text())
    (share / "follow.py").write_text(FOLLOW)
    cli = f"{host.python} /share/logs/follow.py logs -f -n 0 backend --target local --file /share/logs/desired-state.yaml"
    env = "PYTHONPATH=/src HOME=/root XDG_CACHE_HOME=/tmp/cache"
    pid = host.exec(["sh", "-c", f"{env} {cli} </dev/null >/tmp/follow.out 2>&1 & echo $!"]).stdout.strip()
    until(lambda: len(processes(host, "journalctl")) == 1)
    marker = uuid.uuid4().hex
    assert host.http(f"/api/version?marker={marker}").status == 200
    until(lambda: marker in (host.read("/tmp/follow.out") or b"").decode())
    host.exec(["kill", "-INT", pid])
    until(lambda: host.exec(["kill", "-0", pid], check=False).rc != 0, timeout=10)
    assert processes(host, "journalctl") == []
    assert (host.read("/tmp/follow.out") or b"").decode().endswith("interrupted\n")
