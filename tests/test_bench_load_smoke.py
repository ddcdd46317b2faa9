"""The benchmark runners work end to end on a real host and write their reports.

Tiny versions of `python -m benchmarks.deploy_load` and `python -m benchmarks.watch_latency`:
they assert that the runners run and report, never what the numbers are (CI machines vary,
and timing assertions there only produce flaky failures).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploying import REPO

pytestmark = [pytest.mark.slow, pytest.mark.testhost]


def _run(module: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # --no-lock: an untimed smoke run must not queue behind (or block) a timed benchmark.
    return subprocess.run(
        [sys.executable, "-m", module, "--no-lock", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
        check=False,
    )


def test_deploy_load_runner_reports_every_phase(tmp_path: Path) -> None:
    out = tmp_path / "deploy-under-load.md"
    raw = tmp_path / "raw"
    run = _run(
        "benchmarks.deploy_load",
        *("--rate", "20", "--seconds", "2", "--deploy-at", "0.5", "--gap", "0.5", "--tail", "0.5"),
        *("--strategies", "blue-green", "--connections", "close", "--health", "timeout: 20\nstable: 0.2"),
        *("--out", str(out), "--raw", str(raw)),
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    text = out.read_text()
    assert "| blue-green | one per request | deploy to 2.0.0 |" in text
    assert "| blue-green | one per request | rollback to 1.0.0 |" in text
    for phase in ("steady 1.0.0", "deploy", "steady 2.0.0", "rollback", "steady 1.0.0 again"):
        assert f"| {phase} |" in text
    assert (raw / "blue-green-close-1.json").is_file()


def test_watch_latency_runner_reports_trials_and_noop_passes(tmp_path: Path) -> None:
    out = tmp_path / "watch.md"
    run = _run(
        "benchmarks.watch_latency",
        *("--trials", "1", "--strategies", "blue-green", "--noop-seconds", "1.5", "--passes", "3"),
        *("--health", "timeout: 20\nstable: 0.2", "--out", str(out)),
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    text = out.read_text()
    assert "| blue-green | 1 |" in text
    assert "exec channels for" in text
