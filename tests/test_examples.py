"""The shipped examples work on a real host: the CI workflows' deploy and plan steps, run from
the workflow files with the environment they set, and the watch-mode systemd unit."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage
import pytest
from pyrage import x25519

from tests import workflows
from tests.deploying import APP, REPO, WATCHED_PATHS, Project, serves, serves_once_settled, unit_pid
from tests.testhost import TestHost

pytestmark = pytest.mark.testhost


DEPLOY = "github-actions-deploy.yml"
PLAN = "github-actions-plan.yml"
SECRET_LINES = (  # the shipped desired-state.yaml shows both, commented out
    "  API_TOKEN: ${DEPLOY_API_TOKEN}",
    "  SIGNING_KEY: {from_age: secrets/prod.env.age, key: SIGNING_KEY}",
)


@dataclass
class Checkout:
    """A user's repository as the workflows check it out: the example app's sources, the shipped
    desired-state.yaml aimed at the test host with both of its secret lines in use, and an
    age-encrypted secrets/prod.env.age; plus what CI's secret store holds for it."""

    repo: Path
    runner: Path
    identity: x25519.Identity
    token: str
    signing_key: str = ""

    def encrypt(self, signing_key: str, message: str) -> None:
        """Commit secrets/prod.env.age with a new SIGNING_KEY, as a person rotating it would."""
        self.signing_key = signing_key
        plain = f"# production\nSIGNING_KEY={signing_key}\n".encode()
        (self.repo / "secrets" / "prod.env.age").write_bytes(
            pyrage.encrypt(plain, [self.identity.to_public()])
        )
        self.commit(message)

    def commit(self, message: str) -> None:
        for args in (["add", "-A"], ["commit", "-q", "-m", message]):
            subprocess.run(["git", "-C", str(self.repo), *args], check=True, capture_output=True)

    def contexts(self, host: TestHost, **stored: str) -> dict[str, Any]:
        """What the workflows' ${{ }} read: CI's secrets (`stored` replaces some) and variables,
        and GitHub's own."""
        return {
            "secrets": {
                "DEPLOY_SSH_KEY": host.key_path.read_text(),
                "DEPLOY_API_TOKEN": self.token,
                "RECONCILER_AGE_IDENTITY": str(self.identity),
                **stored,
            },
            "vars": {"DEPLOY_KNOWN_HOSTS": host.known_hosts.read_text()},
            "github": {
                "token": "ghs_not-a-real-token",
                "repository": "acme/choiros",
                "event": {"pull_request": {"number": 7}},
            },
        }

    def run(self, workflow: str, job: str, step: str, contexts: dict[str, Any], **kw: Any) -> workflows.Ran:
        found = workflows.step(workflow, job, step)
        return workflows.run(found, contexts, workspace=self.repo, runner_temp=self.runner, **kw)


@pytest.fixture
def checkout(project: Project, tmp_path: Path) -> Checkout:
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("dist", "__pycache__")
    for folder in ("app", "ci"):  # the sources and the scripts the workflow steps run
        shutil.copytree(REPO / "examples" / folder, repo / "examples" / folder, ignore=ignore)
    state = (
        (REPO / "desired-state.yaml")
        .read_text()
        .replace("target: local", f"target: {project.host.ssh_target}")
    )
    for line in SECRET_LINES:
        assert f"  # {line.strip()}" in state, line
        state = state.replace(f"  # {line.strip()}", line)
    (repo / "desired-state.yaml").write_text(state)
    (repo / "secrets").mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    for key, value in (("user.name", "dev"), ("user.email", "dev@invalid")):
        subprocess.run(["git", "-C", str(repo), "config", key, value], check=True)
    made = Checkout(repo, tmp_path / "runner", x25519.Identity.generate(), f"tok-{secrets.token_hex(8)}")
    made.encrypt(f"sig-{secrets.token_hex(8)}", "Deploy 1.0.0")
    return made


# Where a secret may be on the host: the EnvironmentFile, and the record of the last good
# states that a rollback restores it from (root's, 0600 in a 0700 folder).
ENV_FILE = f"/etc/{APP}/backend.env"
GOOD = f"/var/lib/reconciler/{APP}/good.json"


def where_on_the_host(host: TestHost, *values: str) -> list[str]:
    """Every file on the host (tmpfs included) that holds one of `values`."""
    args = [arg for value in values for arg in ("-e", value)]
    found = host.exec(
        [
            "grep",
            "-rlF",
            "-D",
            "skip",
            *args,
            "/etc",
            "/opt",
            "/var",
            "/srv",
            "/root",
            "/home",
            "/run",
            "/tmp",
        ],
        check=False,
    )
    return sorted(found.stdout.split())


def test_deploy_workflow_deploys_with_the_secrets_it_passes(project: Project, checkout: Checkout) -> None:
    """examples/ci/github-actions-deploy.yml's deploy step, run from the workflow file with the
    env it sets: the pinned host key, ${DEPLOY_API_TOKEN} and a from_age: secret opened with
    the age identity the workflow passes. Then a rotated secret, and the refusals."""
    host = project.host
    step = ("deploy", "Build, plan and deploy")
    first = checkout.run(DEPLOY, *step, checkout.contexts(host))
    said = first.stdout + first.stderr
    assert first.rc == 0, said
    assert "== deploy" in first.stdout and serves(host) == "1.0.0"
    assert checkout.token not in said and checkout.signing_key not in said
    env_file = (host.read(ENV_FILE) or b"").decode()
    assert f'API_TOKEN="{checkout.token}"' in env_file and f'SIGNING_KEY="{checkout.signing_key}"' in env_file
    assert where_on_the_host(host, checkout.token, checkout.signing_key) == sorted([ENV_FILE, GOOD])
    modes = host.exec(["stat", "-c", "%a %U", ENV_FILE, GOOD, f"/var/lib/reconciler/{APP}"]).stdout.split(
        "\n"
    )
    assert modes[:3] == ["640 root", "600 root", "700 root"], modes
    backend = host.exec(["cat", f"/proc/{unit_pid(host, f'{APP}-backend.service')}/environ"]).stdout
    assert f"SIGNING_KEY={checkout.signing_key}" in backend.split("\0")

    again = checkout.run(DEPLOY, *step, checkout.contexts(host))
    assert again.rc == 0 and "nothing to deploy" in again.stdout, again.stdout + again.stderr

    # A rotated secret in git: without the identity (a secret the environment does not hold is
    # an empty string to GitHub) the job fails before it touches the host...
    old = checkout.signing_key
    checkout.encrypt(f"sig-{secrets.token_hex(8)}", "Rotate the signing key")
    before = host.tree_state(WATCHED_PATHS)
    blind = checkout.run(DEPLOY, *step, checkout.contexts(host, RECONCILER_AGE_IDENTITY=""))
    assert blind.rc == 1 and "no identity to decrypt it with" in blind.stderr, blind.stdout + blind.stderr
    assert "$RECONCILER_AGE_IDENTITY" in blind.stderr
    assert "desired-state.yaml:" in blind.stderr and "env.SIGNING_KEY.from_age" in blind.stderr
    assert host.tree_state(WATCHED_PATHS) == before
    # ...and with it the new value replaces the old one, on the host and in the backend.
    rotated = checkout.run(DEPLOY, *step, checkout.contexts(host))
    said = rotated.stdout + rotated.stderr
    assert rotated.rc == 0 and "== deploy" in rotated.stdout, said
    assert old not in said and checkout.signing_key not in said
    assert where_on_the_host(host, old) == [GOOD]  # the state a rollback would go back to
    assert where_on_the_host(host, checkout.signing_key) == sorted([ENV_FILE, GOOD])
    backend = host.exec(["cat", f"/proc/{unit_pid(host, f'{APP}-backend.service')}/environ"]).stdout
    assert f"SIGNING_KEY={checkout.signing_key}" in backend.split("\0")

    forged = (
        f"{host.address} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    )
    contexts = checkout.contexts(host)
    contexts["vars"]["DEPLOY_KNOWN_HOSTS"] = forged
    refused = checkout.run(DEPLOY, *step, contexts)
    assert refused.rc == 1 and "CHANGED" in refused.stderr


HOOK_RECEIVER = """
import http.server, json, sys

class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open(sys.argv[2], "a") as out:
            out.write(json.dumps({"body": body, "auth": self.headers.get("Authorization")}) + "\\n")
        self.send_response(204)
        self.end_headers()

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""

SCRAPE = (
    "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9108/metrics').read().decode())"
)


def test_watch_unit_runs_on_the_host_with_notifications_and_metrics(project: Project) -> None:
    host = project.host
    share = Path(host.share) / "watch"
    share.mkdir(parents=True, exist_ok=True)
    artifact = project.artifacts["1.0.0"]
    (share / artifact.name).write_bytes(artifact.read_bytes())
    (share / "receiver.py").write_text(HOOK_RECEIVER)
    notify = "- url: http://127.0.0.1:9977/hook\n  header: {name: Authorization, from_env: HOOK_TOKEN}"
    body = project.render("1.0.0", notify=notify).replace(f"target: {host.ssh_target}", "target: local")
    (share / "desired-state.yaml").write_text(body.replace(str(artifact), f"/share/watch/{artifact.name}"))
    unit = (REPO / "examples" / "systemd" / "reconciler-watch.service").read_text()
    assert "--metrics-listen 127.0.0.1:9108" in unit and "EnvironmentFile=-/etc/reconciler/watch.env" in unit
    # The test host has the dependencies in a venv and the repository at /src, and no git remote.
    unit = unit.replace("/opt/reconciler/bin/reconcile", f"{host.python} -m reconciler")
    unit = unit.replace("/srv/deploy", "/share/watch").replace(" --follow main", "")
    unit = unit.replace("[Service]\n", "[Service]\nEnvironment=PYTHONPATH=/src\n")
    host.write("/etc/reconciler/watch.env", b"HOOK_TOKEN=Bearer from-the-env-file\n", mode=0o600)
    host.write("/etc/systemd/system/reconciler-watch.service", unit.encode())
    received = share / "received.jsonl"
    try:
        receiver = ["/share/watch/receiver.py", "9977", "/share/watch/received.jsonl"]
        host.exec(["systemd-run", "--unit", "hook-receiver", host.python, *receiver])
        host.exec(["systemctl", "daemon-reload"])
        host.exec(["systemctl", "start", "reconciler-watch"])
        deadline = time.monotonic() + 30
        while serves_once_settled(host) != "1.0.0" or not received.exists():
            assert time.monotonic() < deadline, host.exec(
                ["journalctl", "-u", "reconciler-watch", "-n", "30"]
            ).stdout
            time.sleep(0.3)
        assert serves(host) == "1.0.0"
        (post,) = [json.loads(line) for line in received.read_text().splitlines()]
        assert post["body"]["event"] == "deploy" and post["body"]["version"] == "1.0.0"
        assert post["auth"] == "Bearer from-the-env-file"
        metrics = host.exec([host.python, "-c", SCRAPE]).stdout
        assert 'reconciler_passes_total{host="local",result="converged"} 1.0' in metrics, metrics
        assert 'reconciler_serving_info{host="local",release="1.0.0"' in metrics
        host.exec(["systemctl", "stop", "reconciler-watch"])
        result = host.exec(
            ["systemctl", "show", "-p", "Result,ExecMainStatus", "--value", "reconciler-watch"]
        ).stdout.split()
        assert result == ["success", "0"], result
    finally:
        host.exec(["systemctl", "stop", "reconciler-watch", "hook-receiver"], check=False)
        host.exec(["rm", "-rf", "/etc/systemd/system/reconciler-watch.service", "/etc/reconciler"])
        host.exec(["systemctl", "daemon-reload"])


FAKE_GH = """#!/bin/sh
# Stands in for the GitHub CLI: records each call with the token and repository it was given,
# and the comment body it would post, beside itself.
here=$(dirname "$0")
echo "gh $* (GH_TOKEN=$GH_TOKEN GH_REPO=$GH_REPO)" >> "$here/gh.log"
case "$1 $2" in
  "api repos/{owner}/{repo}/issues/7/comments") cat "$here/existing" 2>/dev/null ;;
esac
for arg in "$@"; do
  case "$arg" in body=@*) cp "${arg#body=@}" "$here/body.md" ;; esac
done
if [ "$1 $2" = "pr comment" ]; then cp "$5" "$here/body.md"; fi
"""


def test_plan_workflow_posts_a_plan_that_masks_the_secrets(
    project: Project, checkout: Checkout, tmp_path: Path
) -> None:
    """examples/ci/github-actions-plan.yml's steps, run from the workflow file: a pull request
    that bumps the release and rotates the age-encrypted secret gets the plan as a comment,
    secret values masked, and the host does not change."""
    host = project.host
    merged = checkout.run(DEPLOY, "deploy", "Build, plan and deploy", checkout.contexts(host))
    assert merged.rc == 0, merged.stdout + merged.stderr
    old = checkout.signing_key
    state = checkout.repo / "desired-state.yaml"
    state.write_text(
        state.read_text().replace('version: "1.0.0"', 'version: "2.0.0"').replace("-1.0.0.", "-2.0.0.")
    )
    checkout.encrypt(f"sig-{secrets.token_hex(8)}", "Deploy 2.0.0 with a new signing key")
    gh = tmp_path / "bin"
    gh.mkdir()
    (gh / "gh").write_text(FAKE_GH)
    (gh / "gh").chmod(0o755)
    path = workflows.tools_path(gh)
    step = ("plan", "Plan and post it on the pull request")

    before = host.tree_state(WATCHED_PATHS)
    first = checkout.run(PLAN, *step, checkout.contexts(host), path=path)
    assert first.rc == 0, first.stdout + first.stderr
    body = (gh / "body.md").read_text()
    assert body.startswith("<!-- reconcile plan -->\n## choiros 2.0.0 on ")
    assert "changes pending" in body and "serving 1.0.0 since" in body
    assert "`+ upload` | `/opt/choiros/releases/2.0.0`" in body
    assert "+WorkingDirectory=/opt/choiros/releases/2.0.0" in body  # the unit file's diff
    assert "SIGNING_KEY=(secret, changed)" in body
    assert "exit 2; merging deploys it" in body
    for value in (old, checkout.signing_key, checkout.token):
        assert value not in body and value not in first.stdout + first.stderr
    log = (gh / "gh.log").read_text()
    assert "gh pr comment 7 --body-file plan.md (GH_TOKEN=ghs_not-a-real-token GH_REPO=acme/choiros)" in log
    assert host.tree_state(WATCHED_PATHS) == before, "a plan changes nothing on the host"
    summary = checkout.run(PLAN, "plan", "Keep the plan with the run", checkout.contexts(host))
    assert (
        summary.rc == 0
        and (checkout.runner / "step_summary").read_text() == (checkout.repo / "plan.md").read_text()
    )

    # The next push updates the same comment; a broken file is posted too, and fails the job.
    (gh / "existing").write_text("4242\n")
    state.write_text(state.read_text().replace("port: 8080", "port: 80"))
    second = checkout.run(PLAN, *step, checkout.contexts(host), path=path)
    assert second.rc == 1
    assert "gh api -X PATCH repos/{owner}/{repo}/issues/comments/4242" in (gh / "gh.log").read_text()
    body = (gh / "body.md").read_text()
    assert "the desired state is invalid" in body and "backend.port: port 80 is already used" in body
