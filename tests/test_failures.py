"""When things go wrong, on a real host: a configuration change that breaks a healthy release,
the controller killed at each step of a failing deploy (the health gate included), and what
the next run finds. Safety must follow from what is recorded on the host, not from what the
run that was interrupted had in mind."""

from __future__ import annotations

import json

import pytest

from tests.deploying import WATCHED_PATHS, Load, Project, gated_invocation, reset_host, serves, unit_pid

pytestmark = pytest.mark.testhost

GOOD_ENV = "DATABASE_PATH: /var/lib/choiros/choiros.db\nCORS_ALLOW_ORIGINS: https://choir.example"
# A mistyped DATABASE_PATH: the backend cannot open its database and exits at start.
BROKEN_ENV = "DATABASE_PATH: /proc/choiros-typo/choiros.db\nCORS_ALLOW_ORIGINS: https://choir.example"
SHORT_GATE = "timeout: 3\ninterval: 0.1\nstable: 0.3"


def serving_unit(strategy: str, project: Project) -> str:
    if strategy != "blue-green":
        return "choiros-backend.service"
    text = project.host.exec(["cat", "/etc/caddy/apps/choiros.caddy"]).stdout
    colour = text.split("# routes to colour: ", 1)[1].split()[0]
    return f"choiros-backend-{colour}.service"


def env_file(strategy: str, project: Project) -> str:
    if strategy != "blue-green":
        return "/etc/choiros/backend.env"
    return "/etc/choiros/" + serving_unit(strategy, project).removeprefix("choiros-").replace(
        ".service", ".env"
    )


@pytest.mark.parametrize("strategy", ["restart", "symlink-swap", "blue-green"])
def test_a_config_change_that_fails_its_gate_restores_the_config(project: Project, strategy: str) -> None:
    host = project.host
    project.write("1.0.0", strategy=strategy, env=GOOD_ENV, health=SHORT_GATE)
    assert project.once().rc == 0
    live = serving_unit(strategy, project)
    pid = unit_pid(host, live)
    with Load(host) as load:
        project.write("1.0.0", strategy=strategy, env=BROKEN_ENV, health=SHORT_GATE)
        run = project.once()
    print(f"\n{strategy}: a failing env change under load: {load.sent} requests, {len(load.failed)} failed")
    assert run.rc == 3, run.stdout
    assert run.json["result"] == "rolled_back" and run.json["rolled_back_to"] == "1.0.0"
    assert serves(host) == "1.0.0"
    assert "/var/lib/choiros/choiros.db" in host.exec(["cat", env_file(strategy, project)]).stdout
    assert gated_invocation(host, serving_unit(strategy, project)), "serves without a gate record"
    if strategy == "blue-green":
        assert load.failed == [], load.failed[:5]
        assert unit_pid(host, live) == pid, "the live colour was restarted"

    # The same broken file again: refused, nothing touched.
    before = host.tree_state(WATCHED_PATHS)
    again = project.once()
    assert again.rc == 3 and again.json["result"] == "quarantined", again.stdout
    assert host.tree_state(WATCHED_PATHS) == before

    # The healthy release was never quarantined: restoring the file converges, with no flag.
    status = json.loads(project.reconcile("status", "--json").stdout)
    assert [q["version"] for q in status["quarantined"].values()] == ["1.0.0"]
    project.write("1.0.0", strategy=strategy, env=GOOD_ENV, health=SHORT_GATE)
    fixed = project.once()
    assert fixed.rc == 0, fixed.stdout
    assert project.once("--dry-run").rc == 0
    assert serves(host) == "1.0.0"


def _points(strategy: str, project: Project) -> list[tuple[str, int]]:
    """Where to kill the controller: after each action before the gate, during the gate, and
    during the rollback the agent runs once the gate failed."""
    dry = project.once("--dry-run")
    names = [a for a, _ in dry.actions()]
    gate = names.index("health-check")
    return [("after", i) for i in range(1, gate + 1)] + [("gate", gate + 1), ("rollback", 0)]


def _killer(where: str, index: int) -> tuple[object, float]:
    if where == "rollback":
        return (lambda line: "rolling back on the host" in line), 0.0
    if where == "gate":
        return (lambda line: line.lstrip().startswith(f"ok {index - 1}/")), 1.0
    return (lambda line: line.lstrip().startswith(f"ok {index}/")), 0.0


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["symlink-swap", "blue-green"])
def test_controller_killed_at_each_step_of_a_failing_deploy(project: Project, strategy: str) -> None:
    """SIGKILL of `reconcile` after every action of a deploy whose release fails its gate, in
    the middle of the gate, and in the middle of the rollback: the agent on the host carries
    on (it gates what it started and rolls back), so the next run, waiting for the lock,
    finds the old release serving with a gate record and exits 3 naming the quarantined one."""
    host = project.host
    project.write("1.0.0", strategy=strategy, health=SHORT_GATE)
    assert project.once().rc == 0
    project.write("2.1.0-bad", strategy=strategy, health=SHORT_GATE)
    points = _points(strategy, project)
    outcomes = []
    for where, index in points:
        reset_host(host)
        project.write("1.0.0", strategy=strategy, health=SHORT_GATE)
        assert project.once().rc == 0
        project.write("2.1.0-bad", strategy=strategy, health=SHORT_GATE)
        when, delay = _killer(where, index)
        with Load(host, rate=20) as load:
            lines = project.killed_when("--once", when=when, delay=delay)  # type: ignore[arg-type]
            after = project.once("--lock-timeout", "60")
        label = f"{where} {index}" if index else where
        assert after.rc == 3, f"{label}: {after.stdout}\n" + "\n".join(lines)
        assert "2.1.0-bad" in after.json["error"] and "quarantined" in after.json["error"], after.json
        assert serves(host) == "1.0.0", label
        assert gated_invocation(host, serving_unit(strategy, project)), f"{label}: serves ungated"
        if strategy == "blue-green":
            assert load.failed == [] and load.versions == {"1.0.0"}, (
                f"{label}: {load.failed[:3]} {load.versions}"
            )
        outcomes.append(f"{label}: {after.json['result']}")
    print(f"\n{strategy}: controller killed at {len(points)} points: " + "; ".join(outcomes))
