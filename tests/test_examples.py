"""The shipped examples work: the CI deploy job and the watch-mode systemd unit, on a real host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploying import REPO, WATCHED_PATHS, Project, serves, serves_once_settled

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
# Stands in for the GitHub CLI: records each call, and the comment body it would post.
echo "gh $*" >> "$GH_LOG"
case "$1 $2" in
  "api repos/{owner}/{repo}/issues/7/comments") cat "$GH_EXISTING" 2>/dev/null ;;
esac
for arg in "$@"; do
  case "$arg" in body=@*) cp "${arg#body=@}" "$GH_BODY" ;; esac
done
if [ "$1 $2" = "pr comment" ]; then cp "$5" "$GH_BODY"; fi
"""


def test_ci_plan_job_posts_the_plan_on_the_pull_request(project: Project, tmp_path: Path) -> None:
    host = project.host
    project.write("1.0.0")
    assert project.once().rc == 0
    repo = tmp_path / "repo"
    repo.mkdir()
    bump = project.render("2.0.0").replace(str(project.artifacts["2.0.0"]), "dist/choiros-2.0.0.tar.gz")
    (repo / "desired-state.yaml").write_text(bump)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text(FAKE_GH)
    (bin_dir / "gh").chmod(0o755)
    env = dict(
        os.environ,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        PYTHONPATH=str(REPO),
        DEPLOY_SSH_KEY=host.key_path.read_text(),
        DEPLOY_KNOWN_HOSTS=host.known_hosts.read_text(),
        RECONCILE=f"{sys.executable} -m reconciler",
        PR_NUMBER="7",
        GH_LOG=str(tmp_path / "gh.log"),
        GH_BODY=str(tmp_path / "body.md"),
        GH_EXISTING=str(tmp_path / "existing"),
    )
    job = [str(REPO / "examples" / "ci" / "plan.sh")]
    before = host.tree_state(WATCHED_PATHS)
    first = subprocess.run(job, cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    body = (tmp_path / "body.md").read_text()
    assert body.startswith("<!-- reconcile plan -->\n## choiros 2.0.0 on ")
    assert "changes pending" in body and "serving 1.0.0 since" in body
    assert "`+ upload` | `/opt/choiros/releases/2.0.0`" in body
    assert "+WorkingDirectory=/opt/choiros/releases/2.0.0" in body  # the unit file's diff
    assert "exit 2; merging deploys it" in body
    assert "gh pr comment 7 --body-file plan.md" in (tmp_path / "gh.log").read_text()
    assert host.tree_state(WATCHED_PATHS) == before, "a plan changes nothing on the host"

    # The next push updates the same comment; a broken file is posted too, and fails the job.
    (tmp_path / "existing").write_text("4242\n")
    (repo / "desired-state.yaml").write_text(bump.replace("port: 8080", "port: 80"))
    second = subprocess.run(job, cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert second.returncode == 1
    assert "gh api -X PATCH repos/{owner}/{repo}/issues/comments/4242" in (tmp_path / "gh.log").read_text()
    body = (tmp_path / "body.md").read_text()
    assert "the desired state is invalid" in body and "backend.port: port 80 is already used" in body
