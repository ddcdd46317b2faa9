"""Watch mode against a real host: file edits deploy, drift is corrected, failures back off,
SIGTERM stops cleanly. Each test prints the figure it measured."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.deploying import REPO, Project, serves

pytestmark = pytest.mark.testhost


class Watch:
    """`reconcile --watch` as a child process; its JSON-lines log is collected as it comes."""

    def __init__(self, project: Project, *args: str) -> None:
        cmd = [sys.executable, "-m", "reconciler", "--watch", "-f", str(project.root / "desired-state.yaml")]
        cmd += ["-i", str(project.host.key_path), "--known-hosts", str(project.host.known_hosts), *args]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "raw", "line": line}
            event["_t"] = time.monotonic()
            with self.lock:
                self.events.append(event)

    def named(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e.get("event") == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.named(name)
            if len(found) >= count:
                return found[count - 1]
            assert self.proc.poll() is None, f"watch exited early: {self.events[-5:]}"
            time.sleep(0.05)
        raise AssertionError(f"no {name!r} #{count} within {timeout}s; last events: {self.events[-5:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


@contextmanager
def watching(project: Project, *args: str) -> Iterator[Watch]:
    w = Watch(project, *args)
    try:
        yield w
    finally:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait(10)


def save_atomically(path: Path, text: str) -> None:
    """How editors save: a new file renamed over the old one."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    tmp.replace(path)


def wait_until(check: Any, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if check():
                return time.monotonic() - t0
        except (OSError, ValueError, AssertionError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s")


def test_editing_the_file_deploys_and_drift_is_corrected(project: Project) -> None:
    path = project.write("1.0.0")
    host = project.host
    with watching(project, "--interval", "3") as w:
        w.wait_for("converged")
        assert serves(host) == "1.0.0"

        t0 = time.monotonic()
        save_atomically(path, project.render("2.0.0"))
        w.wait_for("plan", count=2, timeout=10)
        first_action = w.named("plan")[1]["_t"] - t0
        took = wait_until(lambda: serves(host) == "2.0.0", 20)
        print(f"\nfile saved -> plan {first_action:.2f} s -> serving 2.0.0 {took:.2f} s")
        assert took < 10

        host.write("/etc/caddy/apps/choiros.caddy", b':80 {\n\trespond "hand edited"\n}\n')
        host.exec(["caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--force"])
        assert host.http("/").text == "hand edited"
        restored = wait_until(lambda: serves(host) == "2.0.0", 15)
        print(f"hand-edited Caddyfile restored after {restored:.2f} s (drift interval 3 s +-10%)")
        assert restored < 6
        assert w.stop() == 0


def test_unreachable_target_backs_off_instead_of_looping(project: Project) -> None:
    body = project.render("1.0.0").replace(
        f"target: {project.host.ssh_target}", "target: ssh://root@127.0.0.1:1"
    )
    project.write(body=body)
    with watching(project, "--interval", "1", "--max-backoff", "60") as w:
        time.sleep(12)
        failures = w.named("pass failed")
        assert w.stop() == 0
    delays = [f["retry_in_s"] for f in failures]
    print(f"\n{len(failures)} failed passes in 12 s with a 1 s drift interval; retry delays {delays}")
    assert 2 <= len(failures) <= 6, failures
    assert delays == sorted(delays) or max(delays) > delays[0], "backoff must grow"


def test_a_release_failing_its_gate_is_tried_once_not_in_a_loop(project: Project) -> None:
    path = project.write("1.0.0")
    with watching(project, "--interval", "1") as w:
        w.wait_for("converged")
        save_atomically(path, project.render("2.1.0-bad", health="timeout: 3\ninterval: 0.1\nstable: 0.3"))
        w.wait_for("release not deployed", timeout=30)
        time.sleep(6)  # six drift intervals
        attempts = w.named("release not deployed")
        assert w.stop() == 0
    print(f"\n{len(attempts)} attempt(s) of the failing release over 6 drift intervals")
    assert len(attempts) == 1
    assert serves(project.host) == "1.0.0"


def test_sigterm_during_an_apply_finishes_the_action_and_exits_0(project: Project) -> None:
    path = project.write("1.0.0")
    with watching(project, "--interval", "30") as w:
        w.wait_for("converged")
        save_atomically(path, project.render("2.4.0-slow", health="timeout: 20\ninterval: 0.1\nstable: 0.3"))
        w.wait_for("working", timeout=15)  # an upload or a health wait is under way
        t0 = time.monotonic()
        code = w.stop()
        print(f"\nSIGTERM during apply: exit {code} after {time.monotonic() - t0:.2f} s")
        assert code == 0
    run = project.once()
    assert run.rc == 0, run.stdout
    assert project.once("--dry-run").rc == 0
    assert serves(project.host) == "2.4.0-slow"


def test_status_shows_the_passes_and_their_commits(project: Project) -> None:
    subprocess.run(["git", "init", "-q", str(project.root)], check=True)
    project.write("1.0.0")
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@e.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@e.invalid",
    )
    subprocess.run(["git", "-C", str(project.root), "add", "desired-state.yaml"], check=True)
    subprocess.run(["git", "-C", str(project.root), "commit", "-qm", "v1"], check=True, env=env)
    assert project.once().rc == 0
    head = subprocess.run(
        ["git", "-C", str(project.root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    status = project.reconcile("status")
    assert status.rc == 0
    assert head[:12] in status.stdout and "1.0.0" in status.stdout
