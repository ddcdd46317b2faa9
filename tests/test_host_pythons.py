"""The agent on the oldest host it supports: Debian bullseye, python3 3.9, systemd 247.

The README promises python3 3.9 or newer on the host; the other test hosts are bookworm
(3.11, systemd 252). Here the reconciler runs on this machine as always and sends the agent
over SSH to the bullseye host's /usr/bin/python3. The scenarios are the bookworm modules' own
tests of the agent's essential paths, collected again in this module, so conftest's `testhost`
boots TESTHOST_RELEASE for them: a deploy from scratch and a second run that plans nothing,
a bump and its revert (symlink-swap), blue-green with its instant rollback, health gates
that fail (an error answer, a crash) and are rolled back and quarantined, SQLite snapshots
taken and restored with Python 3.9's sqlite3, unit properties read from systemd 247's bus
agreeing with its `systemctl show`, and `reconcile logs` and `exec` on the host's side.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests import test_data, test_health_gates, test_once_ssh, test_systemd_bus
from tests.deploying import Project, agents_python
from tests.operating import Running, command, processes, run, until
from tests.testhost import TestHost

pytestmark = pytest.mark.testhost

TESTHOST_RELEASE = "bullseye"

test_deploy_from_scratch_then_nothing_to_do = test_once_ssh.test_deploy_from_scratch_then_nothing_to_do
test_bump_plans_only_what_is_needed_and_revert_needs_no_upload = (
    test_once_ssh.test_bump_plans_only_what_is_needed_and_revert_needs_no_upload
)
test_many_requests_on_one_connection = test_once_ssh.test_many_requests_on_one_connection
test_blue_green_deploy_and_instant_rollback = test_health_gates.test_blue_green_deploy_and_instant_rollback
test_failing_release_rolls_back_exits_3_and_is_not_retried = (
    test_health_gates.test_failing_release_rolls_back_exits_3_and_is_not_retried
)
test_crashing_release_is_rolled_back_with_journal_lines = (
    test_health_gates.test_crashing_release_is_rolled_back_with_journal_lines
)
test_snapshot_on_the_way_out_restore_on_the_way_back = (
    test_data.test_snapshot_on_the_way_out_restore_on_the_way_back
)
test_the_bus_and_systemctl_agree_on_every_unit_state = (
    test_systemd_bus.test_the_bus_and_systemctl_agree_on_every_unit_state
)


def test_the_agent_runs_on_the_hosts_python_3_9_with_systemd_247(testhost: TestHost) -> None:
    """What the tests above ran against: the agent reports the interpreter it runs on, and
    Caddy is bookworm's (borrowed by the harness: bullseye has no caddy package)."""
    assert testhost.release == TESTHOST_RELEASE
    systemd = testhost.exec(["systemctl", "--version"]).stdout.split()
    assert systemd[:2] == ["systemd", "247"], systemd
    assert testhost.exec(["caddy", "version"]).stdout.startswith("2.6.2")
    python = agents_python(testhost)
    assert python.startswith("3.9."), python


def test_logs_and_exec_run_on_python_3_9(project: Project) -> None:
    """The day-two commands' host side (agent/journal.py, agent/attach.py) on 3.9 and systemd
    247: a followed line, Ctrl-C leaving no journalctl, exit statuses with and without a
    terminal, an interrupted command stopped and recorded."""
    host = project.host
    project.write("1.0.0")
    assert project.once().rc == 0
    follower = Running(command(project, "logs", "-f", "-n", "0", "backend"))
    try:
        until(lambda: len(processes(host, "journalctl")) == 1)
        marker = uuid.uuid4().hex
        assert host.http(f"/api/version?marker={marker}").status == 200
        follower.wait_for(lambda line: marker in line)
        assert follower.interrupt()[0] == 130
    finally:
        follower.kill()
    until(lambda: processes(host, "journalctl") == [], timeout=10)
    db = "/var/lib/choiros/choiros.db"
    plain = run(command(project, "exec", argv=("sh", "-c", f"sqlite3 {db} 'select 6*7' && exit 3")))
    assert (plain.rc, plain.stdout) == (3, "42\n"), plain.stderr
    tty = run(command(project, "exec", "-t", argv=("sh", "-c", "test -t 1 && exit 4")))
    assert tty.rc == 4, tty.stdout + tty.stderr
    sleeper = Running(command(project, "exec", argv=("sleep", "600")))
    try:
        until(lambda: processes(host, "sleep") != [])
        assert sleeper.interrupt()[0] == 130
    finally:
        sleeper.kill()
    until(lambda: processes(host, "sleep") == [])

    def results() -> list[object]:
        records = (host.read("/var/lib/reconciler/choiros/history.jsonl") or b"").decode().splitlines()
        return [json.loads(r).get("result") for r in records[-3:]]

    # The agent writes its line once the interrupted command's unit has ended, which may be
    # just after the CLI has exited 130 and the process is gone.
    until(lambda: results()[-1:] == ["interrupted"], timeout=10, what="the interrupted exec's history line")
    assert results() == ["failed", "failed", "interrupted"]
