"""Health-gated deploys on a real host: blue/green, automatic rollback, quarantine."""

from __future__ import annotations

import json

import pytest

from tests.deploying import WATCHED_PATHS, Project, serves, unit_pid

pytestmark = pytest.mark.testhost

BLUE, GREEN = "choiros-backend-blue.service", "choiros-backend-green.service"
SHORT_GATE = "timeout: 4\ninterval: 0.1\nstable: 2"  # an unhealthy release fails within 4 s


def routed(project: Project) -> str:
    text = (project.host.read("/etc/caddy/apps/choiros.caddy") or b"").decode()
    return "green" if "127.0.0.1:8082" in text else "blue" if "127.0.0.1:8081" in text else "?"


def test_blue_green_deploy_and_instant_rollback(project: Project) -> None:
    host = project.host
    project.write("1.0.0", strategy="blue-green")
    first = project.once()
    assert first.rc == 0, first.stderr
    assert serves(host) == "1.0.0" and routed(project) == "blue"

    project.write("2.0.0", strategy="blue-green")
    bump = project.once()
    assert bump.rc == 0, bump.stderr
    names = bump.actions()
    assert names.index(("health-check", "http://127.0.0.1:8082/health")) < names.index(
        ("reload", "caddy.service")
    )
    assert serves(host) == "2.0.0" and routed(project) == "green"
    blue_pid = unit_pid(host, BLUE)
    assert blue_pid > 0, "the old colour stays warm"

    project.write("1.0.0", strategy="blue-green")
    back = project.once()
    assert back.rc == 0, back.stderr
    kinds = {a for a, _ in back.actions()}
    assert kinds <= {"validate+write", "reload", "symlink", "record-good"}, back.actions()
    assert serves(host) == "1.0.0" and routed(project) == "blue"
    assert unit_pid(host, BLUE) == blue_pid, "rollback restarted the backend"
    assert project.once("--dry-run").rc == 0


def test_failing_release_rolls_back_exits_3_and_is_not_retried(project: Project) -> None:
    host = project.host
    project.write("1.0.0")
    assert project.once().rc == 0
    project.write("2.1.0-bad", health=SHORT_GATE)
    run = project.once()
    assert run.rc == 3, run.stdout + run.stderr
    data = run.json
    assert data["result"] == "rolled_back" and data["rolled_back_to"] == "1.0.0"
    assert "HTTP 500" in data["error"]
    assert serves(host) == "1.0.0"

    before = host.tree_state(WATCHED_PATHS)
    again = project.once()
    assert again.rc == 3 and again.json["result"] == "quarantined"
    assert "--retry-quarantined" in again.json["error"]
    assert host.tree_state(WATCHED_PATHS) == before, "a quarantined release was retried"

    status = json.loads(project.reconcile("status", "--json").stdout)
    assert [q["version"] for q in status["quarantined"].values()] == ["2.1.0-bad"]
    back = [r for r in status["runs"] if r.get("result") == "rolled_back"]
    assert back and back[-1]["rolled_back"] == {"ok": True, "to": "1.0.0"}, "the agent records its rollback"

    retry = project.once("--retry-quarantined")
    assert retry.rc == 3 and serves(host) == "1.0.0"

    project.write("2.0.0")
    fixed = project.once()
    assert fixed.rc == 0, fixed.stderr
    assert serves(host) == "2.0.0"


def test_crashing_release_is_rolled_back_with_journal_lines(project: Project) -> None:
    project.write("1.0.0")
    assert project.once().rc == 0
    project.write("2.2.0-crash", health=SHORT_GATE)
    run = project.reconcile("--once")
    assert run.rc == 3, run.stdout + run.stderr
    assert "rolled back to 1.0.0" in run.stderr
    assert serves(project.host) == "1.0.0"


def test_an_answer_naming_another_version_does_not_pass_the_gate(project: Project) -> None:
    project.write("1.0.0")
    assert project.once().rc == 0
    project.write("2.3.0-liar", health=SHORT_GATE)
    run = project.once()
    assert run.rc == 3, run.stdout + run.stderr
    assert "does not name version 2.3.0-liar" in run.json["error"]
    assert serves(project.host) == "1.0.0"


def test_blue_green_failure_never_reaches_traffic(project: Project) -> None:
    host = project.host
    project.write("1.0.0", strategy="blue-green")
    assert project.once().rc == 0
    project.write("2.1.0-bad", strategy="blue-green", health=SHORT_GATE)
    run = project.once()
    assert run.rc == 3, run.stdout + run.stderr
    assert serves(host) == "1.0.0" and routed(project) == "blue"
    assert unit_pid(host, GREEN) == 0, "the failed colour keeps running a quarantined release"


def test_first_deploy_failing_has_nothing_to_roll_back_to(project: Project) -> None:
    project.write("2.1.0-bad", health=SHORT_GATE)
    run = project.once()
    assert run.rc == 1
    assert "no earlier release" in run.json["error"]
    status = json.loads(project.reconcile("status", "--json").stdout)
    assert [q["version"] for q in status["quarantined"].values()] == ["2.1.0-bad"]
