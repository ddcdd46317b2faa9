"""`target: local`: the reconciler runs on the host itself (as a user's CI runner or the watch
unit would), from the repository bind-mounted read-only at /src in the test host."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.deploying import Project, serves
from tests.testhost import ExecResult, TestHost

pytestmark = pytest.mark.testhost


def run_local(host: TestHost, *args: str) -> ExecResult:
    return host.exec(
        [host.python, "-m", "reconciler", *args, "-f", "/share/project/desired-state.yaml"],
        env={"PYTHONPATH": "/src"},
        check=False,
        timeout=120,
    )


def local_project(project: Project, version: str) -> None:
    share = Path(project.host.share) / "project"
    share.mkdir(parents=True, exist_ok=True)
    shutil.copy(project.artifacts[version], share / project.artifacts[version].name)
    body = project.render(version).replace(f"target: {project.host.ssh_target}", "target: local")
    body = body.replace(str(project.artifacts[version]), project.artifacts[version].name)
    (share / "desired-state.yaml").write_text(body)


def test_local_target_deploys_bumps_and_is_idempotent(project: Project) -> None:
    host = project.host
    local_project(project, "1.0.0")
    first = run_local(host, "--once", "--json")
    assert first.rc == 0, first.stderr
    assert json.loads(first.stdout)["result"] == "converged"
    assert serves(host) == "1.0.0"
    again = run_local(host, "--once", "--dry-run", "--json")
    assert again.rc == 0 and json.loads(again.stdout)["actions"] == []

    local_project(project, "2.0.0")
    bump = run_local(host, "--once", "--json")
    assert bump.rc == 0, bump.stderr
    assert serves(host) == "2.0.0"


def test_local_path_never_imports_paramiko(project: Project) -> None:
    host = project.host
    local_project(project, "1.0.0")
    assert run_local(host, "--once").rc == 0
    probe = host.exec(
        [
            host.python,
            "-c",
            "import sys, runpy; sys.argv=['reconcile','--once','-f','/share/project/desired-state.yaml'];"
            "\ntry:\n runpy.run_module('reconciler', run_name='__main__')\nexcept SystemExit: pass\n"
            "print('PARAMIKO' if 'paramiko' in sys.modules else 'clean')",
        ],
        env={"PYTHONPATH": "/src"},
    )
    assert probe.stdout.strip().endswith("clean"), probe.stdout
