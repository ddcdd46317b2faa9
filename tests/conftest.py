"""Shared fixtures: built artifacts once per session, one real test host per module."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploying import Project, build_artifacts, reset_host
from tests.distribution import Distribution, built
from tests.testhost import TestHost, boot
from tests.testhost.rootfs import DEFAULT_RELEASE

# The Ctrl-C tests send SIGINT to the CLI. A suite started in the background by sh runs with
# SIGINT ignored, which every process it starts inherits (Python then installs no handler):
# take the default back, so the CLI under test gets Ctrl-C as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# The CLI remembers files that passed the schema; tests (and the CLI runs they start)
# keep that memory to themselves.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="reconciler-test-cache-")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_artifacts(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def distribution(tmp_path_factory: pytest.TempPathFactory) -> Distribution:
    """The wheel and sdist as .ci/run builds them into dist/ (built afresh when stale)."""
    return built(tmp_path_factory.mktemp("dist-build"))


@pytest.fixture(scope="module")
def testhost(request: pytest.FixtureRequest) -> Iterator[TestHost]:
    """One host per module: bookworm, or the Debian release the module names in TESTHOST_RELEASE."""
    with boot(release=getattr(request.module, "TESTHOST_RELEASE", DEFAULT_RELEASE)) as host:
        yield host


@pytest.fixture
def project(testhost: TestHost, artifacts: dict[str, Path], tmp_path: Path) -> Project:
    """A clean host (app state removed, Caddy back to Debian's default) and a user's folder."""
    reset_host(testhost)
    return Project(tmp_path, artifacts, testhost)


BenchRun = Callable[[Callable[..., Any], Any], tuple[Any, list[str]]]


@pytest.fixture
def small_benchmark() -> BenchRun:
    """Runs a benchmark's `run(opts, say)` for a smoke test: as root only, and skipped rather
    than waiting when a real benchmark is timing (opts.lock_wait = 0: it holds the bench lock).
    Returns its results and the lines it said."""
    if os.geteuid() != 0:
        pytest.skip("test hosts need root")

    def go(run: Callable[..., Any], opts: Any) -> tuple[Any, list[str]]:
        opts.lock_wait = 0
        lines: list[str] = []
        try:
            return run(opts, lines.append), lines
        except TimeoutError:
            pytest.skip("another benchmark holds /tmp/reconciler-bench.lock")

    return go
