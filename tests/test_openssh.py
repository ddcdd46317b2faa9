"""The OpenSSH transport (`--ssh openssh`) against a real host: the same runs, the same
refusals, and a master connection that later runs reuse."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.executors.openssh import CONTROL_DIR, OpenSSHExecutor
from reconciler.spec.model import Target
from tests.deploying import REPO, Project, serves

pytestmark = pytest.mark.testhost


def close_master(project: Project) -> None:
    """A live master skips authentication (that is what it is for); refusal tests need none."""
    OpenSSHExecutor(Target("ssh", host=project.host.address, user="root", port=22)).close_master()


def test_deploy_noop_and_bump_over_openssh(project: Project) -> None:
    close_master(project)
    project.write("1.0.0")
    first = project.once("--ssh", "openssh")
    assert first.rc == 0, first.stdout + first.stderr
    assert serves(project.host) == "1.0.0"
    again = project.once("--ssh", "openssh", "--dry-run")
    assert again.rc == 0 and again.json["actions"] == []
    project.write("2.0.0")
    bump = project.once("--ssh", "openssh")
    assert bump.rc == 0, bump.stdout
    assert serves(project.host) == "2.0.0"
    sockets = list(CONTROL_DIR.glob("reconciler-*"))
    assert sockets, "no master connection was kept for the next run"
    close_master(project)


def test_openssh_refuses_unknown_keys_and_bad_credentials(project: Project, tmp_path: Path) -> None:
    project.write("1.0.0")
    close_master(project)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    unknown = project.reconcile("--once", "--json", "--ssh", "openssh", known_hosts=empty)
    assert unknown.rc == 1 and "host key" in unknown.json["error"], unknown.stdout
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    env = dict(os.environ, SSH_AUTH_SOCK="")
    cmd = ["--once", "--json", "--ssh", "openssh", "-i", str(stranger)]
    full = subprocess.run(  # only the stranger's key is offered
        [
            sys.executable,
            "-m",
            "reconciler",
            *cmd,
            "-f",
            str(project.root / "desired-state.yaml"),
            "--known-hosts",
            str(project.host.known_hosts),
        ],
        capture_output=True,
        text=True,
        env=dict(env, PYTHONPATH=str(REPO)),
        check=False,
        cwd=tmp_path,
    )
    assert full.returncode == 1 and "refused authentication" in full.stdout, full.stdout + full.stderr
