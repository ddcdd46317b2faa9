"""The GitHub Actions workflows of examples/ci, without a host: the lint gate, what the plan and
the deploy workflows are given, and the containers workflow's build decision and pin push run
from the workflow file against real git repositories. (tests/test_examples.py runs the deploy
and plan steps against a test host.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests import workflows
from tests.deploying import REPO

DEPLOY = "github-actions-deploy.yml"
PLAN = "github-actions-plan.yml"
CONTAINERS = "github-actions-containers.yml"
GITHUB = {"repository_owner": "acme", "repository": "acme/choiros", "token": "ghs_not-a-real-token"}

BROKEN = """\
name: broken
on: push
jobs:
  deploy:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "deploying ${{ github.event.head_commit.message }}"
"""


def lint(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / ".ci" / "lint-workflows"), *map(str, files)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def test_the_shipped_workflows_pass_the_lint_that_fails_a_broken_one(tmp_path: Path) -> None:
    shipped = lint()
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN)
    found = lint(broken)
    said = found.stdout + found.stderr
    assert found.returncode == 1
    assert 'runtime "node20" is deprecated' in said  # actionlint
    assert "[expression]" in said and "potentially untrusted" in said  # actionlint
    for audit in ("unpinned-uses", "template-injection", "artipacked", "excessive-permissions"):
        assert f"[{audit}]" in said, audit  # zizmor


def env_names(found: workflows.Step) -> set[str]:
    return {name for name, value in found.env.items() if "secrets." in value or "vars." in value}


def test_what_a_pull_request_plans_with_its_merge_deploys_with() -> None:
    """The bug this guards against: a from_age: secret planned fine on the pull request (the plan
    workflow had the age identity) and then failed its deploy (the deploy workflow had not)."""
    plan = workflows.step(PLAN, "plan", "Plan and post it on the pull request")
    deploy = workflows.step(DEPLOY, "deploy", "Build, plan and deploy")
    assert "RECONCILER_AGE_IDENTITY" in env_names(plan)
    assert env_names(plan) <= env_names(deploy), env_names(plan) - env_names(deploy)
    for name in env_names(plan):
        assert plan.env[name] == deploy.env[name], name
    planned = workflows.load(PLAN)["on"]["pull_request"]["paths"]
    deployed = workflows.load(DEPLOY)["on"]["push"]["paths"]
    assert set(planned) <= set(deployed), set(planned) - set(deployed)
    for path in ("desired-state.yaml", "secrets/prod.env.age", "secrets/tls/key.pem.age"):
        assert workflows.triggers(PLAN, "pull_request", path), path
        assert workflows.triggers(DEPLOY, "push", path), path
    assert not workflows.triggers(DEPLOY, "push", "README.md")


def test_every_job_asks_for_its_own_permissions() -> None:
    for name in (DEPLOY, PLAN, CONTAINERS):
        data = workflows.load(name)
        assert data["permissions"] == {}, name
        for job, spec in data["jobs"].items():
            assert spec.get("permissions"), f"{name}: {job}"
            assert spec["permissions"].get("contents") in ("read", "write")


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def commit(repo: Path, message: str, files: dict[str, str]) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def app_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "dev")
    git(repo, "config", "user.email", "dev@invalid")
    (repo / "examples" / "ci").mkdir(parents=True)
    (repo / "examples" / "ci" / "app-changed.sh").write_bytes((workflows.CI / "app-changed.sh").read_bytes())
    pins = (workflows.CI / "desired-state.containers.yaml").read_text()
    commit(
        repo, "The app", {"examples/app/page.html": "v1\n", "examples/ci/desired-state.containers.yaml": pins}
    )
    return repo


def test_the_image_build_follows_what_the_push_changed_not_its_message(
    app_repo: Path, tmp_path: Path
) -> None:
    """The containers workflow built images only for commits whose message did not start with
    "Revert ", so a revert of an app change deployed the old images. It now asks the diff."""
    assert not any(
        "head_commit" in str(job.get("if", "")) for job in workflows.load(CONTAINERS)["jobs"].values()
    )
    detect = workflows.step(CONTAINERS, "images", "Did this push change the app?")
    assert detect.fields["id"] == "changes"

    def changed(before: str, after: str) -> str:
        ran = workflows.run(
            detect, {"github": {**GITHUB, "event": {"before": before}, "sha": after}},
            workspace=app_repo, runner_temp=tmp_path / "runner",
        )  # fmt: skip
        assert ran.rc == 0, ran.stderr
        return ran.outputs["changed"]

    state = "examples/ci/desired-state.containers.yaml"
    first = git(app_repo, "rev-parse", "HEAD")
    assert changed("0" * 40, first) == "true"  # the branch's first push: build
    page = commit(app_repo, "New page", {"examples/app/page.html": "v2\n"})
    assert changed(first, page) == "true"
    pinned = commit(app_repo, "Deploy 2026.01.01-abcdef0", {state: "pinned: 2\n"})
    assert changed(page, pinned) == "false"  # only the pins: deploy them, build nothing
    git(app_repo, "revert", "--no-edit", "HEAD")
    rollback = git(app_repo, "rev-parse", "HEAD")
    assert git(app_repo, "log", "-1", "--format=%s").startswith('Revert "Deploy')
    assert changed(pinned, rollback) == "false"  # the rollback deploys the older pins
    git(app_repo, "revert", "--no-edit", page)
    reverted = git(app_repo, "rev-parse", "HEAD")
    assert git(app_repo, "log", "-1", "--format=%s") == 'Revert "New page"'
    assert changed(rollback, reverted) == "true"  # the app changed back: build it
    assert changed(first, rollback) == "true"  # a push of several commits: their sum...
    assert changed(first, reverted) == "false"  # ...which here is the app as it was
    assert changed("f" * 40, reverted) == "true"  # a forced push dropped BEFORE: build

    broken = workflows.run(
        detect, {"github": {**GITHUB, "event": {"before": first}, "sha": "not-a-commit"}},
        workspace=app_repo, runner_temp=tmp_path / "runner",
    )  # fmt: skip
    assert broken.rc != 0 and "changed=" not in broken.stdout


def test_the_pins_are_pushed_and_deployed_by_the_same_run(app_repo: Path, tmp_path: Path) -> None:
    """A push made with the job's GITHUB_TOKEN starts no workflow run: the deploy job is part of
    the run that pushes the pins, and deploys the commit it pushed."""
    data = workflows.load(CONTAINERS)
    assert data["jobs"]["deploy"]["needs"] == "images"
    checkout = data["jobs"]["deploy"]["steps"][0]
    assert checkout["uses"].startswith("actions/checkout@")
    assert checkout["with"]["ref"] == "${{ needs.images.outputs.commit }}"
    assert "steps.pin.outputs.commit" in data["jobs"]["images"]["outputs"]["commit"]
    pin = workflows.step(CONTAINERS, "images", "Commit the pins and push them to main")
    assert pin.fields["id"] == "pin"

    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(app_repo), str(origin))
    checkout_dir = tmp_path / "checkout"
    git(tmp_path, "clone", "-q", str(origin), str(checkout_dir))
    base = git(checkout_dir, "rev-parse", "HEAD")
    git(checkout_dir, "checkout", "-q", "--detach", base)  # as actions/checkout leaves it

    def pin_and_push(workspace: Path, version: str) -> workflows.Ran:
        state = workspace / "examples/ci/desired-state.containers.yaml"
        state.write_text(state.read_text().replace('version: "1.0.0"', f'version: "{version}"'))
        contexts = {
            "steps": {"build": {"outputs": {"version": version}}},
            "github": {**GITHUB, "sha": base, "ref_name": "main"},
        }
        return workflows.run(pin, contexts, workspace=workspace, runner_temp=tmp_path / "runner")

    ran = pin_and_push(checkout_dir, "2026.01.01-abcdef0")
    assert ran.rc == 0, ran.stdout + ran.stderr
    assert ran.outputs["commit"] == git(origin, "rev-parse", "main") != base
    assert git(origin, "log", "-1", "--format=%s", "main") == "Deploy 2026.01.01-abcdef0"
    assert "ghs_not-a-real-token" not in ran.stdout + ran.stderr

    # main moved while the images were built: the push is refused, nothing is overwritten.
    late = tmp_path / "late"
    git(tmp_path, "clone", "-q", str(origin), str(late))
    git(late, "checkout", "-q", "--detach", base)
    refused = pin_and_push(late, "2026.01.02-1234567")
    assert refused.rc != 0 and "commit" not in refused.outputs
    assert git(origin, "log", "-1", "--format=%s", "main") == "Deploy 2026.01.01-abcdef0"
