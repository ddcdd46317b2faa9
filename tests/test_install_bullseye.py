"""The README's server install on the oldest server it supports: Debian 11, python3 3.9, no
network. The wheel .ci/run built and its dependencies' wheels (for cp39, downloaded on this
machine) are carried in; `python3 -m venv /opt/reconciler` and pip install from them, as
examples/systemd/reconciler-watch.service says. That unit, byte for byte, then runs watch mode
with `target: local`, following a git repository on the server: the repository's own
desired-state.yaml deploys, a pushed version bump is fetched and served by Caddy, a pushed
`git revert` brings the old release back, and a push that rewrites history is not deployed.
Each step prints the time it took."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import reconciler
from tests.deploying import REPO, reset_host, serves, serves_once_settled
from tests.distribution import NAME, SERVERS, Distribution, wheelhouse
from tests.testhost import TestHost

pytestmark = [pytest.mark.testhost, pytest.mark.slow]

TESTHOST_RELEASE = "bullseye"

UNIT = REPO / "examples" / "systemd" / "reconciler-watch.service"
HOOK = REPO / "examples" / "systemd" / "post-receive"
#: The unit's own install lines this test follows (pip from carried-in wheels: no network here).
INSTALL = "python3 -m venv /opt/reconciler && /opt/reconciler/bin/pip install deploy-reconciler"
INSTALL_OFFLINE = f"{INSTALL.replace(' deploy-reconciler', '')} --no-index --find-links /share/wheels {NAME}"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "dev",
    "GIT_AUTHOR_EMAIL": "dev@invalid",
    "GIT_COMMITTER_NAME": "dev",
    "GIT_COMMITTER_EMAIL": "dev@invalid",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}


class Developer:
    """A developer's clone of the deploy repository on this machine, pushing over SSH to the
    bare repository on the server."""

    def __init__(self, root: Path, host: TestHost) -> None:
        self.root = root
        ssh = [
            "ssh", "-i", str(host.key_path), "-o", f"UserKnownHostsFile={host.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        ]  # fmt: skip
        self.env = {**os.environ, **GIT_ENV, "GIT_SSH_COMMAND": shlex.join(ssh)}
        self.remote = f"ssh://root@{host.address}/srv/deploy.git"

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"git {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout.strip() + done.stderr.strip()

    def commit(self, message: str, artifact: Path | None = None) -> str:
        if artifact is not None:
            shutil.copy(artifact, self.root / "examples" / "app" / "dist" / artifact.name)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")

    def bump(self, old: str, new: str, artifact: Path) -> str:
        """The README's deploy: the version and artifact path bumped in one commit."""
        state = self.root / "desired-state.yaml"
        state.write_text(state.read_text().replace(old, new))
        return self.commit(f"Deploy {new}", artifact)

    def push(self, *flags: str) -> float:
        """Push main; the time it was done."""
        self.git("push", "-q", *flags, self.remote, "main")
        return time.monotonic()


def journal(host: TestHost) -> list[dict[str, Any]]:
    """The watch unit's JSON log lines (--log-format json)."""
    out = host.exec(["journalctl", "-u", "reconciler-watch", "-o", "cat", "--no-pager"]).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def served_within(host: TestHost, version: str, since: float, timeout: float) -> float:
    """Seconds from `since` until Caddy serves `version` (page and backend agreeing)."""
    while serves_once_settled(host) != version:
        assert time.monotonic() - since < timeout, (
            f"{version} not served within {timeout} s; log tail:\n"
            + "\n".join(json.dumps(e)[:300] for e in journal(host)[-8:])
        )
        time.sleep(0.1)
    assert serves(host) == version
    return time.monotonic() - since


@pytest.fixture
def server(testhost: TestHost) -> Iterator[TestHost]:
    """The module's host, clean, and clean again afterwards."""
    reset_host(testhost)
    yield testhost
    testhost.exec(["systemctl", "disable", "--now", "reconciler-watch"], check=False)
    testhost.exec(
        [
            "rm",
            "-rf",
            "/etc/systemd/system/reconciler-watch.service",
            "/etc/reconciler",
            "/opt/reconciler",
            "/srv",
        ]
    )
    testhost.exec(["systemctl", "daemon-reload"])


def test_installed_from_wheels_watch_mode_deploys_pushes_on_the_servers_python(
    server: TestHost, distribution: Distribution, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    host = server
    target = SERVERS[host.release]
    unit = UNIT.read_text()
    assert INSTALL in unit and "cp reconciler-watch.service /etc/systemd/system/" in unit
    assert "--follow main" in unit

    # Install: the wheels carried in (as scp would), the venv and pip exactly as the unit says.
    t0 = time.monotonic()
    wheels = wheelhouse(host.share / "wheels", [str(distribution.wheel)], target, tmp_path / "pip.log")
    assert distribution.wheel.name in wheels
    # anyio needs exceptiongroup below 3.11 only: the markers were evaluated for the server.
    assert any("exceptiongroup" in w for w in wheels)
    downloaded = time.monotonic() - t0
    assert host.exec(["python3", "--version"]).stdout.startswith(f"Python {target.python_version}.")
    host.exec(["sh", "-c", INSTALL_OFFLINE], timeout=300)
    version = host.exec(["/opt/reconciler/bin/reconcile", "--version"]).stdout.strip()
    assert version == f"reconcile {reconciler.__version__}"
    installed = time.monotonic() - t0 - downloaded

    # The deploy repository: the README's desired-state.yaml as it is (target: local) and the
    # release it names, pushed to a bare repository on the server and cloned next to it.
    dev = Developer(tmp_path / "deploy", host)
    (dev.root / "examples" / "app" / "dist").mkdir(parents=True)
    shutil.copy(REPO / "desired-state.yaml", dev.root / "desired-state.yaml")
    dev.git("init", "-q", "-b", "main")
    first = dev.commit("Deploy 1.0.0", artifacts["1.0.0"])
    host.exec(["git", "init", "-q", "--bare", "-b", "main", "/srv/deploy.git"])
    dev.push()
    host.exec(["git", "clone", "-q", "/srv/deploy.git", "/srv/deploy"])

    # The unit, byte for byte; no watch.env (EnvironmentFile=- makes it optional).
    host.exec(["install", "-d", "-m", "0700", "/etc/reconciler"])
    host.write("/etc/systemd/system/reconciler-watch.service", UNIT.read_bytes())
    host.exec(["systemctl", "daemon-reload"])
    started = time.monotonic()
    host.exec(["systemctl", "enable", "--now", "reconciler-watch"])
    first_deploy = served_within(host, "1.0.0", started, 60)
    print(f"\n{host.release}: wheels downloaded {downloaded:.1f} s, venv + pip install {installed:.1f} s")
    print(f"first deploy served {first_deploy:.1f} s after `systemctl enable --now`")

    # Watch mode's metrics, from the host itself: the first pass converged.
    scrape = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9108/metrics').read().decode())"
    converged_once = 'reconciler_passes_total{host="local",result="converged"} 1.0'
    while converged_once not in (metrics := host.exec(["/opt/reconciler/bin/python", "-c", scrape]).stdout):
        assert time.monotonic() - started < 60, metrics
        time.sleep(0.1)

    # The post-receive hook, installed as it says: a push is fetched and deployed at once
    # (without it, at the unit's next fetch, every 60 s; tests/test_follow.py covers that timer).
    host.write("/srv/deploy.git/hooks/post-receive", HOOK.read_bytes(), mode=0o755)
    bump = dev.bump("1.0.0", "2.0.0", artifacts["2.0.0"])
    pushed = dev.push()
    bumped = served_within(host, "2.0.0", pushed, 30)
    print(f"bump to 2.0.0 served {bumped:.1f} s after `git push` returned")

    dev.git("revert", "--no-edit", "HEAD")
    revert = dev.git("rev-parse", "HEAD")
    pushed = dev.push()
    reverted = served_within(host, "1.0.0", pushed, 30)
    print(f"revert to 1.0.0 served {reverted:.1f} s after `git push` returned")

    # History rewritten on the remote (a force-push of an amended commit naming 3.0.0): not a
    # fast-forward of what the server runs, so it is refused, and 1.0.0 keeps serving.
    dev.bump("1.0.0", "3.0.0", artifacts["3.0.0"])
    dev.git("reset", "-q", "--soft", "HEAD~2")
    dev.git("commit", "-q", "-m", "Rewritten history")
    pushed = dev.push("--force")
    while not [
        e for e in journal(host) if e["event"] == "cannot fast-forward; not deploying the remote change"
    ]:
        assert time.monotonic() - pushed < 30, journal(host)[-5:]
        time.sleep(0.1)
    assert host.exec(["git", "-C", "/srv/deploy", "rev-parse", "HEAD"]).stdout.strip() == revert
    assert serves(host) == "1.0.0"

    # What the journal and the host's history say: each push's commit, converged.
    converged = [e for e in journal(host) if e["event"] == "converged"]
    assert [e["commit"] for e in converged] == [first[:12], bump[:12], revert[:12]], converged
    triggers = [e["trigger"] for e in converged]
    assert triggers[0] == "start" and all("push to main" in t for t in triggers[1:]), triggers
    # The hook's SIGHUP woke them (a drift tick's fetch at 60 s could only beat it by chance).
    assert any(t.startswith("SIGHUP") for t in triggers[1:]), triggers
    status = host.exec(
        ["/opt/reconciler/bin/reconcile", "status", "-f", "/srv/deploy/desired-state.yaml"]
    ).stdout
    assert "serves 1.0.0 since" in status, status
    assert all(commit[:12] in status for commit in (first, bump, revert)), status

    # SIGTERM (systemctl stop) finishes and exits 0.
    host.exec(["systemctl", "stop", "reconciler-watch"])
    result = host.exec(["systemctl", "show", "-p", "Result,ExecMainStatus", "--value", "reconciler-watch"])
    assert result.stdout.split() == ["success", "0"], result.stdout
