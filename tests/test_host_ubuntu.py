"""The agent on Ubuntu 22.04 LTS (jammy): python3 3.10, systemd 249, the server the README's
users run their product on.

As tests/test_host_pythons.py does for Debian 11, the reconciler runs on this machine and sends
the agent over SSH to the host's /usr/bin/python3; the scenarios are the bookworm modules' own
tests of the agent's essential paths, collected again here so conftest's `testhost` boots
TESTHOST_RELEASE for them: a deploy from scratch and a second run that plans nothing, a bump and
its revert (symlink-swap), blue-green with its instant rollback, health gates that fail (an
error answer, a crash) and are rolled back and quarantined, and unit properties read from
systemd 249's bus agreeing with its `systemctl show`; then, as a user reaching the server as
a login with passwordless sudo would: a first deploy, a rollback by hand of a release broken
for users and the hold it leaves, and `reconcile logs` reading the units' journal.
tests/test_install_jammy.py installs the built wheel on the same kind of host and runs watch
mode there through examples/systemd's unit.
"""

from __future__ import annotations

import pytest

from tests import (
    test_health_gates,
    test_logs_cmd,
    test_once_ssh,
    test_rollback_cmd,
    test_ssh_trust,
    test_systemd_bus,
)
from tests.deploying import agents_python
from tests.testhost import TestHost

pytestmark = pytest.mark.testhost

TESTHOST_RELEASE = "jammy"

test_deploy_from_scratch_then_nothing_to_do = test_once_ssh.test_deploy_from_scratch_then_nothing_to_do
test_bump_plans_only_what_is_needed_and_revert_needs_no_upload = (
    test_once_ssh.test_bump_plans_only_what_is_needed_and_revert_needs_no_upload
)
test_blue_green_deploy_and_instant_rollback = test_health_gates.test_blue_green_deploy_and_instant_rollback
test_failing_release_rolls_back_exits_3_and_is_not_retried = (
    test_health_gates.test_failing_release_rolls_back_exits_3_and_is_not_retried
)
test_crashing_release_is_rolled_back_with_journal_lines = (
    test_health_gates.test_crashing_release_is_rolled_back_with_journal_lines
)
test_the_bus_and_systemctl_agree_on_every_unit_state = (
    test_systemd_bus.test_the_bus_and_systemctl_agree_on_every_unit_state
)

# Through a login that is not root (`deploy`, passwordless sudo), as on a cloud VM.
users = test_ssh_trust.users
test_a_login_with_passwordless_sudo_deploys = test_ssh_trust.test_a_login_with_passwordless_sudo_deploys
broken, login = test_rollback_cmd.broken, test_rollback_cmd.login
test_symlink_swap_rollback_serves_when_it_returns_and_resume_ends_the_hold = (
    test_rollback_cmd.test_symlink_swap_rollback_serves_when_it_returns_and_resume_ends_the_hold
)
# Last: `deployed` deploys once for the module, and the tests above reset the host.
deployed = test_logs_cmd.deployed
test_json_lines_are_journald_entries = test_logs_cmd.test_json_lines_are_journald_entries


def test_the_agent_runs_on_ubuntu_22_04s_python_3_10_with_systemd_249(testhost: TestHost) -> None:
    """What the tests above ran against: Ubuntu 22.04 with its updates, the agent reporting
    the interpreter it runs on, and Caddy borrowed from bookworm (jammy has no caddy package)."""
    assert testhost.release == TESTHOST_RELEASE
    os_release = testhost.exec(["cat", "/etc/os-release"]).stdout
    assert 'VERSION_ID="22.04"' in os_release and "VERSION_CODENAME=jammy" in os_release, os_release
    systemd = testhost.exec(["systemctl", "--version"]).stdout.split()
    assert systemd[:2] == ["systemd", "249"], systemd
    assert testhost.exec(["caddy", "version"]).stdout.startswith("2.6.2")
    python = agents_python(testhost)
    assert python.startswith("3.10."), python
