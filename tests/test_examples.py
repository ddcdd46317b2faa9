"""The shipped examples work: the CI deploy job and the watch-mode systemd unit, on a real host."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploying import REPO, Project, serves

pytestmark = pytest.mark.testhost


def test_ci_deploy_job_builds_plans_and_deploys(project: Project, tmp_path: Path) -> None:
    host = project.host
    repo = tmp_path / "repo"
    (repo / "examples").mkdir(parents=True)
    (repo / "examples" / "app").symlink_to(REPO / "examples" / "app")
    state = (REPO / "desired-state.yaml").read_text().replace("target: local", f"target: {host.ssh_target}")
    state = state.replace("source: examples/app/dist/", f"source: {tmp_path}/dist/")
    (repo / "desired-state.yaml").write_text(state)
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        DEPLOY_SSH_KEY=host.key_path.read_text(),
        DEPLOY_KNOWN_HOSTS=host.known_hosts.read_text(),
        RECONCILE=f"{sys.executable} -m reconciler",
        BUILD=f"{sys.executable} {REPO}/examples/app/build.py --out {tmp_path}/dist",
    )
    job = [str(REPO / "examples" / "ci" / "deploy.sh")]
    first = subprocess.run(job, cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "== deploy" in first.stdout and serves(host) == "1.0.0"
    again = subprocess.run(job, cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "nothing to deploy" in again.stdout

    forged = dict(
        env,
        DEPLOY_KNOWN_HOSTS=f"{host.address} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
    )
    refused = subprocess.run(job, cwd=repo, env=forged, capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and "CHANGED" in refused.stderr


def test_watch_unit_runs_on_the_host_and_converges(project: Project) -> None:
    host = project.host
    share = Path(host.share) / "watch"
    share.mkdir(parents=True, exist_ok=True)
    artifact = project.artifacts["1.0.0"]
    (share / artifact.name).write_bytes(artifact.read_bytes())
    body = project.render("1.0.0").replace(f"target: {host.ssh_target}", "target: local")
    (share / "desired-state.yaml").write_text(body.replace(str(artifact), f"/share/watch/{artifact.name}"))
    unit = (REPO / "examples" / "systemd" / "reconciler-watch.service").read_text()
    # The test host has the dependencies in a venv and the repository at /src, and no git remote.
    unit = unit.replace("/opt/reconciler/bin/reconcile", f"{host.python} -m reconciler")
    unit = unit.replace("/srv/deploy", "/share/watch").replace(" --follow main", "")
    unit = unit.replace("[Service]\n", "[Service]\nEnvironment=PYTHONPATH=/src\n")
    host.write("/etc/systemd/system/reconciler-watch.service", unit.encode())
    try:
        host.exec(["systemctl", "daemon-reload"])
        host.exec(["systemctl", "start", "reconciler-watch"])
        deadline = time.monotonic() + 30
        while serves(host) != "1.0.0":
            assert time.monotonic() < deadline, host.exec(
                ["journalctl", "-u", "reconciler-watch", "-n", "30"]
            ).stdout
            time.sleep(0.3)
        host.exec(["systemctl", "stop", "reconciler-watch"])
        result = host.exec(
            ["systemctl", "show", "-p", "Result,ExecMainStatus", "--value", "reconciler-watch"]
        ).stdout.split()
        assert result == ["success", "0"], result
    finally:
        host.exec(["systemctl", "stop", "reconciler-watch"], check=False)
        host.exec(["rm", "-f", "/etc/systemd/system/reconciler-watch.service"])
        host.exec(["systemctl", "daemon-reload"])
