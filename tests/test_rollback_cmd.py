"""`reconcile rollback`, the hold it leaves, `reconcile resume` and `reconcile releases` on a
real host, over SSH as root and over a login with passwordless sudo. Each test prints the
figures it measured."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.deploying import WATCHED_PATHS, Load, Project, serves, serves_once_settled, unit_pid
from tests.test_watch import watching

pytestmark = pytest.mark.testhost

BLUE, GREEN = "choiros-backend-blue.service", "choiros-backend-green.service"
BACKEND = "choiros-backend.service"
BROKEN = "2.6.0-broken"  # passes its gate; /api/notes answers 500
SHORT_GATE = "timeout: 4\ninterval: 0.1\nstable: 0.3"

SUDO_USER = """
set -e
id -u deploy >/dev/null 2>&1 || useradd -m -s /bin/bash deploy
install -d -m 700 -o deploy -g deploy /home/deploy/.ssh
install -m 600 -o deploy -g deploy /root/.ssh/authorized_keys /home/deploy/.ssh/authorized_keys
echo 'deploy ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/deploy
chmod 440 /etc/sudoers.d/deploy
"""


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import sys

    from tests.deploying import REPO

    sys.path.insert(0, str(REPO / "examples" / "app"))
    import build  # type: ignore[import-not-found]

    path, _ = build.build(BROKEN, tmp_path_factory.mktemp("broken"), fault="notes-500")
    return Path(path)


@pytest.fixture(params=["root", "sudo"])
def login(request: pytest.FixtureRequest, project: Project, broken: Path) -> Project:
    """The project, its file pointing at the host as root or as `deploy` (passwordless sudo)."""
    project.artifacts = dict(project.artifacts, **{BROKEN: broken})
    if request.param == "sudo":
        project.host.exec(["bash", "-c", SUDO_USER])
        target = f"ssh://deploy@{project.host.address}:22"
        original = project.render

        def render(version: str = "1.0.0", **fields: object) -> str:
            return original(version, **fields).replace(project.host.ssh_target, target)

        project.render = render  # type: ignore[method-assign]
    return project


@pytest.fixture
def root(project: Project, broken: Path) -> Project:
    project.artifacts = dict(project.artifacts, **{BROKEN: broken})
    return project


def git(project: Project, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t")
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    cmd = ["git", "-C", str(project.root), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def commit(project: Project, version: str, message: str, **fields: str) -> str:
    project.write(version, **fields)
    git(project, "add", "desired-state.yaml")
    git(project, "commit", "-q", "-m", message)
    return git(project, "rev-parse", "HEAD")


def notes(project: Project) -> int:
    return project.host.http("/api/notes", timeout=5).status


def held_record(project: Project) -> dict[str, object] | None:
    raw = project.host.read("/var/lib/reconciler/choiros/held.json")
    return None if raw is None else json.loads(raw)


def test_blue_green_rollback_under_load_holds_until_a_new_commit(root: Project) -> None:
    project, host = root, root.host
    git(project, "init", "-q")
    bg = {"strategy": "blue-green", "health": SHORT_GATE}
    commit(project, "1.0.0", "Deploy 1.0.0", **bg)
    assert project.once().rc == 0
    bump = commit(project, BROKEN, f"Deploy {BROKEN}", **bg)
    deployed = project.once()
    assert deployed.rc == 0, deployed.stderr  # it passed its gate...
    assert serves(host) == BROKEN and notes(project) == 500  # ...and is broken for users
    pids = {BLUE: unit_pid(host, BLUE), GREEN: unit_pid(host, GREEN)}

    t0 = time.monotonic()
    with Load(host, rate=50) as load:
        time.sleep(0.5)
        back = project.reconcile("rollback", "--reason", "INC-7: notes answer 500")
        time.sleep(0.5)
    took = time.monotonic() - t0 - 1.0
    assert back.rc == 0, back.stdout + back.stderr
    assert load.failed == [], load.failed[:5]
    assert serves(host) == "1.0.0" and notes(project) == 200
    assert {u: unit_pid(host, u) for u in pids} == pids, "a rollback to the warm colour restarted nothing"
    assert f"git revert --no-edit {bump[:12]}" in back.stdout, back.stdout
    hold = held_record(project)
    assert hold is not None and hold["version"] == "1.0.0" and hold["origin"] == BROKEN
    assert hold["reason"] == "INC-7: notes answer 500" and hold["commit"] == bump
    print(f"\nblue-green rollback by hand: {load.sent} requests, {len(load.failed)} failed, {took:.1f} s")

    # A plain run (CI) leaves the host held, and says so: exit 4, result held.
    ci = project.once()
    assert ci.rc == 4, ci.stdout + ci.stderr
    assert ci.json["result"] == "held" and ci.json["serving"] == "1.0.0" and ci.json["actions"] == []
    assert "reconcile resume" in ci.json["error"]
    status = json.loads(project.reconcile("status", "--json").stdout)
    assert status["held"]["version"] == "1.0.0" and status["held"]["by"].endswith("@" + os.uname().nodename)

    # Watch mode leaves it there too, and puts back a hand-stopped unit of the held state.
    with watching(project, "--interval", "0.5") as watch:
        watch.wait_for("host held by `reconcile rollback`; not deploying")
        host.exec(["systemctl", "stop", BLUE])
        t1 = time.monotonic()
        deadline = t1 + 20
        while serves_once_settled(host) != "1.0.0" and time.monotonic() < deadline:
            time.sleep(0.1)
        restarted = time.monotonic() - t1
        assert serves(host) == "1.0.0", "drift of the held state was not corrected"
        assert unit_pid(host, GREEN) == pids[GREEN], "the held host moved away from its state"
        assert watch.stop() == 0
    print(f"watch mode: held; a hand-stopped unit of the held state served again after {restarted:.1f} s")
    assert project.once().rc == 4 and serves(host) == "1.0.0"

    # A commit that changes the desired state ends the hold: it deploys.
    commit(project, "3.0.0", "Deploy 3.0.0", **bg)
    moved = project.once()
    assert moved.rc == 0, moved.stdout + moved.stderr
    assert ("end-hold", "hold") in moved.actions()
    assert serves(host) == "3.0.0" and held_record(project) is None


def test_symlink_swap_rollback_serves_when_it_returns_and_resume_ends_the_hold(login: Project) -> None:
    project, host = login, login.host
    project.write("1.0.0", health=SHORT_GATE)
    assert project.once().rc == 0
    project.write(BROKEN, health=SHORT_GATE)
    assert project.once().rc == 0 and notes(project) == 500
    dry = project.reconcile("rollback", "--dry-run")
    assert dry.rc == 2 and "restart" in dry.stdout, dry.stdout + dry.stderr
    assert serves(host) == BROKEN, "a dry run changed the host"

    with Load(host, rate=50) as load:
        time.sleep(0.3)
        back = project.reconcile("rollback", "--json")
        at_return = serves(host)
    assert back.rc == 0, back.stdout + back.stderr
    assert at_return == "1.0.0" and notes(project) == 200
    data = back.json
    assert data["result"] == "held" and data["rollback"] == {"from": BROKEN, "to": "1.0.0"}
    assert "git revert" in data["revert"] or "release.version back to 1.0.0" in data["revert"]
    print(f"\nsymlink-swap rollback by hand: serving 1.0.0 when the command returned; {load.sent} requests, "
          f"{len(load.failed)} failed")  # fmt: skip

    assert project.once().rc == 4
    resumed = project.reconcile("resume")
    assert resumed.rc == 0 and "the hold ended" in resumed.stdout, resumed.stdout + resumed.stderr
    again = project.once()
    assert again.rc == 0, again.stdout + again.stderr
    assert serves(host) == BROKEN  # the file still names it: resuming deploys it again


def test_rollback_to_a_named_older_good_state(login: Project) -> None:
    project, host = login, login.host
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        project.write(version, health=SHORT_GATE)
        assert project.once().rc == 0
    back = project.reconcile("rollback", "1.0.0", "--json")
    assert back.rc == 0, back.stdout + back.stderr
    assert back.json["rollback"] == {"from": "3.0.0", "to": "1.0.0"} and serves(host) == "1.0.0"
    # Already there: a second run of the same command (a fleet re-run) changes nothing.
    before = host.tree_state(WATCHED_PATHS)
    same = project.reconcile("rollback", "1.0.0", "--json")
    assert same.rc == 0 and same.json["actions"] == [], same.stdout
    assert host.tree_state(WATCHED_PATHS) == before
    # Without VERSION while held: further back, never to what this hold rolled back from.
    further = project.reconcile("rollback", "--json")
    assert further.rc == 0 and further.json["rollback"]["to"] == "2.0.0", further.stdout
    hold = held_record(project)
    assert hold is not None and len(hold["passed"]) == 2 and hold["origin"] == "1.0.0"  # type: ignore[arg-type]


def test_rollback_with_nothing_to_go_back_to_changes_nothing(login: Project) -> None:
    project, host = login, login.host
    project.write("1.0.0", health=SHORT_GATE)
    assert project.once().rc == 0
    before = host.tree_state(WATCHED_PATHS)
    nothing = project.reconcile("rollback")
    assert nothing.rc == 1, nothing.stdout + nothing.stderr
    assert "nothing to roll back to" in nothing.stderr and "1.0.0 serves now" in nothing.stderr
    assert "Nothing was changed" in nothing.stderr
    unknown = project.reconcile("rollback", "0.9.0")
    assert unknown.rc == 1 and "release 0.9.0 is not on the host" in unknown.stderr, unknown.stderr
    assert host.tree_state(WATCHED_PATHS) == before, "a refused rollback changed the host"
    assert serves(host) == "1.0.0"


def test_releases_after_three_deploys_and_a_quarantine(login: Project) -> None:
    project, host = login, login.host
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        project.write(version, health=SHORT_GATE)
        assert project.once().rc == 0
    project.write("2.1.0-bad", health=SHORT_GATE)
    assert project.once().rc == 3
    listed = project.reconcile("releases", "--json")
    assert listed.rc == 0, listed.stdout + listed.stderr
    rows = {r["version"]: r for r in json.loads(listed.stdout)["releases"]}
    assert set(rows) == {"1.0.0", "2.0.0", "3.0.0", "2.1.0-bad"}
    du = host.exec(["du", "-s", "-B1", "/opt/choiros/releases/3.0.0"]).stdout.split()[0]
    assert rows["3.0.0"]["size"] == int(du), (rows["3.0.0"], du)
    assert rows["3.0.0"]["current"] and rows["3.0.0"]["serving"]
    assert sum(r["previous"] for r in rows.values()) == 1  # (the failed deploy moved `previous`)
    assert all(rows[v]["good"] for v in ("1.0.0", "2.0.0", "3.0.0")) and not rows["2.1.0-bad"]["good"]
    assert rows["2.1.0-bad"]["quarantined"] and not rows["3.0.0"]["quarantined"]
    assert all(len(r["sha256"]) == 64 and r["uploaded"] for r in rows.values())
    assert json.loads(listed.stdout)["rollback"] == "2.0.0" and rows["2.0.0"]["rollback_pick"]
    text = project.reconcile("releases")
    assert text.rc == 0 and "<- rollback" in text.stdout
    print("\n" + text.stdout)


def test_a_failing_or_interrupted_rollback_leaves_what_served(root: Project) -> None:
    project, host = root, root.host
    for version in ("1.0.0", BROKEN):
        project.write(version, health=SHORT_GATE)
        assert project.once().rc == 0
    # 1.0.0 no longer passes its gate here (as after a migration it cannot read): back to what served.
    host.write("/opt/choiros/releases/1.0.0/FAULT", b"health-500\n")
    failed = project.reconcile("rollback", "--json")
    assert failed.rc == 3, failed.stdout + failed.stderr
    assert failed.json["result"] == "rolled_back" and failed.json["rolled_back_to"] == BROKEN
    assert serves(host) == BROKEN and held_record(project) is None
    assert project.once().rc == 0, "a failed rollback by hand quarantines nothing and holds nothing"
    host.exec(["rm", "/opt/choiros/releases/1.0.0/FAULT"])

    # The controller killed once 1.0.0 passed its gate, before Caddy moved: the agent goes back.
    lines = project.killed_when("rollback", when=lambda line: "ok 7/" in line and "health-check" in line)
    assert any("health-check" in line for line in lines), lines
    after = project.once("--lock-timeout", "60")
    assert after.rc == 0 and serves(host) == BROKEN and held_record(project) is None, after.stdout
    # Killed after Caddy's reload: the switch stands, and so does the hold.
    lines = project.killed_when("rollback", when=lambda line: "reload caddy.service" in line and "ok" in line)
    after = project.once("--lock-timeout", "60")
    assert after.rc == 4 and serves(host) == "1.0.0", after.stdout + after.stderr
    assert held_record(project) is not None
