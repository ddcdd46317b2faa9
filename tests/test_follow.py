"""`--follow BRANCH` against real git repositories on this machine: when watch mode fetches, what
a push brings, what SIGHUP does, and a push that is not a fast-forward. No test host: this is
the git side of watch mode; tests/test_install_bullseye.py runs it on a server as a unit."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler.engine import watch
from reconciler.engine.watch import Watcher, WatchSettings

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@invalid",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
    "PATH": "/usr/bin:/bin",
}


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def commit(clone: Path, text: str, message: str) -> str:
    (clone / "desired-state.yaml").write_text(text)
    git("add", "desired-state.yaml", cwd=clone)
    git("commit", "-qm", message, cwd=clone)
    return git("rev-parse", "HEAD", cwd=clone)


class Recorded:
    """Stands in for watch mode's logger: what it said, by level."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.lines.append((level, event, kw))


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A bare repository (the remote), the server's clone that watch mode follows, and a
    developer's clone that pushes."""
    bare, server, dev = tmp_path / "deploy.git", tmp_path / "server", tmp_path / "dev"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git("clone", "-q", str(bare), str(dev), cwd=tmp_path)
    (dev / "desired-state.yaml").write_text("release 1\n")
    git("add", "desired-state.yaml", cwd=dev)
    git("commit", "-qm", "Deploy 1", cwd=dev)
    git("push", "-q", "origin", "main", cwd=dev)
    git("clone", "-q", str(bare), str(server), cwd=tmp_path)
    return bare, server, dev


def watcher(
    server: Path, monkeypatch: pytest.MonkeyPatch, fetch_interval: float = 60.0
) -> tuple[Watcher, Recorded]:
    said = Recorded()
    monkeypatch.setattr(watch, "log", said)
    settings = WatchSettings(follow="main", fetch_interval=fetch_interval, interval=60.0)
    w = Watcher(server / "desired-state.yaml", lambda: None, lambda _d: None, settings)  # type: ignore[arg-type,return-value]
    return w, said


def test_a_push_is_fetched_when_due_and_at_once_on_sighup(
    repos: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _bare, server, dev = repos
    w, said = watcher(server, monkeypatch)
    w.follow_git()  # the first pass fetches: nothing new
    assert w.last_fetch > 0 and not said.lines
    pushed = commit(dev, "release 2\n", "Deploy 2")
    git("push", "-q", "origin", "main", cwd=dev)

    w.follow_git()  # a pass before the fetch interval is over: no fetch
    assert (server / "desired-state.yaml").read_text() == "release 1\n"

    w.on_signal(signal.SIGHUP, None)  # `systemctl reload`, as a post-receive hook runs it
    assert w.wake.is_set() and w.fetch_due_in(time.monotonic()) == 0
    w.follow_git()
    assert (server / "desired-state.yaml").read_text() == "release 2\n"
    assert git("rev-parse", "HEAD", cwd=server) == pushed
    # The journal says why the next pass runs: the push, named by its commit.
    assert ("info", "followed a push", {"branch": "main", "commit": pushed[:12]}) in said.lines
    assert w._take_reasons() == ["start", "SIGHUP", "push to main"]
    assert not [line for line in said.lines if line[0] in ("warning", "error")], said.lines


def test_the_wait_ends_when_the_next_fetch_is_due(
    repos: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass between two fetches (a file change, SIGHUP) used to start a whole new fetch
    interval: with a 60 s interval and drift ticks of 54-66 s, a push could wait ~2 minutes."""
    _bare, server, _dev = repos
    w, _said = watcher(server, monkeypatch)
    w.last_fetch = time.monotonic() - 50
    assert 9.5 < w.next_wait() <= 10.02
    w.last_fetch = time.monotonic() - 70
    assert w.next_wait() <= 0.02
    w.settings.follow = None
    assert w.next_wait() >= 54  # without --follow only the drift interval counts


def test_a_push_that_is_not_a_fast_forward_is_not_deployed(
    repos: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _bare, server, dev = repos
    w, said = watcher(server, monkeypatch, fetch_interval=0)
    before = git("rev-parse", "HEAD", cwd=server)
    # History rewritten on the remote: the server's commit is no longer an ancestor.
    git("checkout", "-q", "--orphan", "rewritten", cwd=dev)
    commit(dev, "release 666\n", "Rewritten")
    git("push", "-q", "--force", "origin", "rewritten:main", cwd=dev)
    w.follow_git()
    assert git("rev-parse", "HEAD", cwd=server) == before
    assert (server / "desired-state.yaml").read_text() == "release 1\n"
    (error,) = [line for line in said.lines if line[0] == "error"]
    assert error[1] == "cannot fast-forward; not deploying the remote change", error


def test_a_remote_that_cannot_be_reached_is_a_warning_and_changes_nothing(
    repos: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    bare, server, _dev = repos
    w, said = watcher(server, monkeypatch)
    bare.rename(bare.with_name("moved.git"))
    w.follow_git()
    assert (server / "desired-state.yaml").read_text() == "release 1\n"
    (warning,) = [line for line in said.lines if line[0] == "warning"]
    assert warning[1] == "git fetch failed" and "deploy.git" in warning[2]["error"], warning


@pytest.mark.timeout(10)
def test_sighup_while_the_loop_holds_the_lock_does_not_hang(
    repos: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signal handlers run on the main thread, between any two bytecodes of the loop."""
    _bare, server, _dev = repos
    w, _said = watcher(server, monkeypatch)
    with w._lock:  # the loop is taking its reasons when SIGHUP arrives
        w.on_signal(signal.SIGHUP, None)
    assert w._take_reasons() == ["start", "SIGHUP"]
