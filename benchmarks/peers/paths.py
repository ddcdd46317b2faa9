"""Where the benchmark keeps things. Everything it builds lives under benchmarks/.work/ (ignored)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORK = REPO / "benchmarks" / ".work" / "peers"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"

#: Held (flock) around every timed phase, so no two benchmarks on this 2-core machine overlap.
LOCK_FILE = Path("/tmp/reconciler-bench.lock")

#: The two releases the change runs flip between.
FROM_VERSION = "1.0.0"
TO_VERSION = "2.0.0"
VERSIONS = (FROM_VERSION, TO_VERSION)

#: The project folder as the host sees it (tests.testhost binds the host's share dir at /share).
HOST_SHARE = "/share"
HOST_PROJECT = f"{HOST_SHARE}/project"
HOST_TOOLS = f"{HOST_SHARE}/bench"
#: The peers' venvs inside the host, installed offline from a wheelhouse made here.
HOST_VENVS = {"ansible": "/opt/bench-ansible", "pyinfra": "/opt/bench-pyinfra"}
