"""The built-in demo: deploy the example app to a disposable test host the GitOps way.

    python examples/demo.py [--keep]

Boots a real Debian host (systemd, sshd, Caddy) in a container, then in a throw-away git
repository holding a copy of desired-state.yaml:
  1. commit release 1.0.0, `reconcile --once` over SSH: the host goes from nothing to serving it;
  2. `reconcile --once` again: nothing to do;
  3. commit a bump to 2.0.0, `reconcile --once`: upload, swap, restart, health gate, switch;
  4. `git revert HEAD`, `reconcile --once`: back to 1.0.0 without an upload;
  5. a second app (examples/second-app: blue-green, on the name notes.example) deployed next
     to the first, sharing one Caddy.
Every deploy runs the release's migration (release.tasks) before traffic moves. After each
step it prints the plan and what Caddy serves. --keep leaves the host up.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "examples" / "app"))

import build  # noqa: E402  (examples/app/build.py)

from tests.testhost import TestHost, boot  # noqa: E402


def banner(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def git(repo: Path, *args: str) -> None:
    env = dict(os.environ, GIT_AUTHOR_NAME="demo", GIT_AUTHOR_EMAIL="demo@example.invalid")
    env.update(GIT_COMMITTER_NAME="demo", GIT_COMMITTER_EMAIL="demo@example.invalid")
    subprocess.run(["git", "-C", str(repo), *args], check=True, env=env, stdout=subprocess.DEVNULL)


def reconcile(repo: Path, host: TestHost, file: str = "desired-state.yaml") -> int:
    cmd = [sys.executable, "-m", "reconciler", "--once", "-f", str(repo / file)]
    cmd += ["-i", str(host.key_path), "--known-hosts", str(host.known_hosts)]
    print(f"$ reconcile --once   (target {host.ssh_target})", flush=True)
    t0 = time.monotonic()
    rc = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=str(REPO)), check=False).returncode
    print(f"(exit {rc} in {time.monotonic() - t0:.1f} s)")
    return rc


def show_site(host: TestHost) -> None:
    page = host.http("/")
    title = re.search(r"<title>(.*?)</title>", page.text)
    api = host.http("/api/version")
    shown = title.group(1) if title else "?"
    print(f"Caddy on {host.address}:80 serves: page '{shown}', /api/version {api.text.strip()}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep", action="store_true", help="leave the test host running until Ctrl-C")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reconciler-demo-"))
    try:
        repo = work / "deploy-repo"
        repo.mkdir()
        dist = repo / "examples" / "app" / "dist"
        banner("CI builds the releases")
        for version in ("1.0.0", "2.0.0"):
            path, sha = build.build(version, dist)
            print(f"built {path.relative_to(repo)}  sha256={sha[:16]}...")
        banner("Booting a disposable test host (systemd + sshd + Caddy)")
        t0 = time.monotonic()
        with boot() as host:
            print(f"host {host.name} at {host.address}, up in {time.monotonic() - t0:.1f} s")
            state = (REPO / "desired-state.yaml").read_text()
            state = state.replace("target: local", f"target: {host.ssh_target}")
            (repo / "desired-state.yaml").write_text(state)
            git(repo, "init", "-q")
            git(repo, "add", "desired-state.yaml")
            git(repo, "commit", "-q", "-m", "Deploy choiros 1.0.0")

            banner("1. Commit 1.0.0 and converge")
            failed = reconcile(repo, host)
            show_site(host)
            banner("2. Run again: nothing to do")
            failed |= reconcile(repo, host)
            banner("3. Commit a version bump to 2.0.0 and converge")
            (repo / "desired-state.yaml").write_text(state.replace("1.0.0", "2.0.0"))
            git(repo, "commit", "-q", "-am", "Deploy choiros 2.0.0")
            failed |= reconcile(repo, host)
            show_site(host)
            banner("4. git revert HEAD and converge: rollback without an upload")
            git(repo, "revert", "--no-edit", "HEAD")
            failed |= reconcile(repo, host)
            show_site(host)
            banner("5. A second app on the same host, sharing its Caddy")
            second = (REPO / "examples" / "second-app" / "desired-state.yaml").read_text()
            (repo / "examples" / "second-app").mkdir(parents=True)
            (repo / "examples" / "second-app" / "desired-state.yaml").write_text(
                second.replace("target: local", f"target: {host.ssh_target}")
            )
            failed |= reconcile(repo, host, "examples/second-app/desired-state.yaml")
            notes = host.http("/api/version", headers={"Host": "notes.example"})
            print(f"notes.example serves /api/version {notes.text.strip()}; :80 still serves:")
            show_site(host)
            banner("The host's history (reconcile status)")
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "reconciler",
                    "status",
                    "-f",
                    str(repo / "desired-state.yaml"),
                    "-i",
                    str(host.key_path),
                    "--known-hosts",
                    str(host.known_hosts),
                ],
                env=dict(os.environ, PYTHONPATH=str(REPO)),
                check=False,
            )
            if args.keep:
                print(
                    f"\nHost left running: ssh -i {host.key_path} -o UserKnownHostsFile={host.known_hosts} "
                    f"root@{host.address}   (Ctrl-C to tear down)"
                )
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
        banner("Test host torn down")
        return 1 if failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
