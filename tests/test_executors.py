"""What the executors import: the local path never loads paramiko, and paramiko's optional
`invoke` is loaded only when the user's ssh config needs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROBE = (
    "import sys, reconciler.executors.ssh as s; m = sys.modules.get('invoke');"
    "print('absent' if m is None else 'loaded')"
)


def probe(home: Path) -> str:
    env = dict(os.environ, HOME=str(home), PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_invoke_is_skipped_without_match_exec(tmp_path: Path) -> None:
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host web\n  HostName 203.0.113.10\n")
    assert probe(tmp_path) == "absent"


def test_invoke_is_kept_for_match_exec(tmp_path: Path) -> None:
    pytest.importorskip("invoke")
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text('Match exec "test -f /etc/bastion"\n  ProxyJump bastion\n')
    assert probe(tmp_path) == "loaded"


def test_local_target_imports_no_paramiko() -> None:
    code = (
        "import sys; from reconciler.executors.connect import executor_for;"
        "from reconciler.spec.model import Target; executor_for(Target('local'));"
        "print('paramiko' in sys.modules, 'reconciler.executors.ssh' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["False", "False"]
