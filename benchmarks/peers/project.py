"""The desired state, written once for every tool, from one source of truth.

Our side is the repository's own desired-state.yaml with only the release version and the
artifact path changed. Ansible's and pyinfra's sides get the very bytes our renderer would
write (unit file, EnvironmentFile, Caddyfile per version), in a JSON "state" file per version
that both read, so a difference between the tools can only be in how they converge.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks.peers import ansible_side, pyinfra_side
from benchmarks.peers.paths import REPO, VERSIONS

APP_BUILD = REPO / "examples" / "app" / "build.py"
HEALTH_GATE = "health_gate.py"
GATE_LOG = "/run/bench-health-gate.log"  # as written in HEALTH_GATE_SOURCE

#: Same semantics as the host agent's health gate (reconciler/agent/health.py
#: do_check_health): `passes` consecutive 200s that name the version, spanning `stable`
#: seconds, from one MainPID, within `timeout`. Both peers run it as a script after a restart,
#: so all three tools wait for exactly the same thing before Caddy moves on. It appends when it
#: started and ended to GATE_LOG on the host (in /run: not state any tool manages).
HEALTH_GATE_SOURCE = '''\
#!/usr/bin/python3
"""health_gate.py URL VERSION UNIT PASSES INTERVAL STABLE TIMEOUT"""
import json, subprocess, sys, time, urllib.request

url, version, unit = sys.argv[1:4]
need, interval, stable, timeout = int(sys.argv[4]), *map(float, sys.argv[5:8])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
GATE_LOG = "/run/bench-health-gate.log"


def main_pid():
    out = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", unit],
                         capture_output=True, text=True).stdout.strip()
    return int(out) if out.isdigit() else 0


def good():
    try:
        with opener.open(url, timeout=5) as resp:
            return resp.status == 200 and str(json.loads(resp.read()).get("version")) == version
    except (OSError, ValueError):
        return False


def done(status):
    # When the gate ran and for how long, for the benchmarks (a rolling deploy's share of gates).
    with open(GATE_LOG, "a") as log:
        log.write(f"{started:.3f} {time.time():.3f} {0 if status is None else 1}\\n")
    sys.exit(status)


started = time.time()
deadline = time.monotonic() + timeout
streak, since, pid = 0, 0.0, 0
while True:
    if good():
        if streak == 0:
            since, pid = time.monotonic(), main_pid()
        streak += 1
    else:
        streak = 0
    if streak >= need and time.monotonic() - since >= stable:
        if main_pid() == pid:
            done(None)
        streak = 0
    if time.monotonic() + interval > deadline:
        done(f"{url} was not healthy within {timeout}s")
    time.sleep(interval)
'''


@dataclass(frozen=True)
class Project:
    """A user's folder: desired-state files, artifacts, and the peers' rendered inputs."""

    root: Path
    app: str

    def desired_file(self, version: str) -> Path:
        return self.root / f"desired-{version}.yaml"

    def state_file(self, version: str) -> Path:
        return self.root / f"state-{version}.json"

    def state(self, version: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.state_file(version).read_text())
        return data


def _load_build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bench_choiros_build", APP_BUILD)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {APP_BUILD}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def desired_text(version: str, template: str) -> str:
    """The repository's desired-state.yaml with only the version and the artifact changed."""
    text, n_version = re.subn(
        r'^(  version: )"[^"]*"', rf'\g<1>"{version}"', template, count=1, flags=re.MULTILINE
    )
    text, n_source = re.subn(
        r"^(  source: )\S+", rf"\g<1>dist/choiros-{version}.tar.gz", text, count=1, flags=re.MULTILINE
    )
    if n_version != 1 or n_source != 1:
        raise RuntimeError("desired-state.yaml no longer has one release.version and one release.source line")
    return text


def render_state(desired_file: Path, tarball: Path) -> dict[str, Any]:
    """Everything the peers need for one version, rendered by our own code."""
    from reconciler.observe.snapshot import unit_path
    from reconciler.plan import identity
    from reconciler.plan.strategies.single_slot import SingleSlot
    from reconciler.render import caddymain
    from reconciler.spec.load import load

    desired = load(desired_file)
    version = desired.release.version
    layout = desired.layout
    slot = SingleSlot(desired)
    units = slot.texts()
    if list(units) != [desired.backend_unit]:
        raise RuntimeError(f"expected only the backend unit, got {list(units)}")
    caddy = slot.caddy_text()
    health = desired.health
    return {
        "app": desired.app,
        "version": version,
        "tarball": str(tarball.relative_to(desired_file.parent)),
        "releases": layout.releases,
        "release_dir": layout.release_dir(version),
        "release_link": f"releases/{version}",  # what our agent writes: relative to the root
        "current": layout.current,
        "previous": layout.previous,
        "unit_name": desired.backend_unit,
        "unit_path": unit_path(desired, desired.backend_unit),
        "unit_text": units[desired.backend_unit],
        "env_path": layout.env_file,
        "env_text": identity.env_text(desired, slot.config),
        # Ours owns only the app's fragment, and the main Caddyfile's import line: on the test
        # host (Caddy's stock Caddyfile before ours ran) the main file imports nothing else.
        "caddyfile": desired.proxy.caddyfile,
        "caddy_main_text": caddymain.render(desired.proxy.apps_dir),
        "fragment": desired.proxy.fragment(desired.app),
        "fragment_text": caddy,
        "health_args": [
            f"http://127.0.0.1:{desired.backend.port}{desired.backend.health}",
            version,
            desired.backend_unit,
            str(health.passes),
            str(health.interval),
            str(health.stable),
            str(health.timeout),
        ],
    }


def build(root: Path) -> Project:
    """Artifacts, desired-state files and rendered state for both versions, in a git repository
    (a user keeps desired-state.yaml in git; our apply records the commit)."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    builder = _load_build_module()
    template = (REPO / "desired-state.yaml").read_text(encoding="utf-8")
    states: dict[str, dict[str, Any]] = {}
    for version in VERSIONS:
        tarball, _sha = builder.build(version, root / "dist")
        desired = root / f"desired-{version}.yaml"
        desired.write_text(desired_text(version, template), encoding="utf-8")
        states[version] = render_state(desired, Path(tarball))
    project = Project(root, states[VERSIONS[0]]["app"])
    for version, state in states.items():
        project.state_file(version).write_text(json.dumps(state, indent=1) + "\n")
    gate = root / HEALTH_GATE
    gate.write_text(HEALTH_GATE_SOURCE)
    gate.chmod(0o755)
    ansible_side.write(root, states)
    pyinfra_side.write(root)
    # Per-host inventories and ssh control sockets go to host/, outside the commit.
    (root / ".gitignore").write_text("host/\n")
    commit(root)
    return project


def commit(root: Path) -> None:
    """Commit what changed in the project folder (nothing when nothing did)."""

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)

    if not (root / ".git").exists():
        git("init", "-q")
    git("add", "-A")
    status = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True, check=True
    )
    if status.stdout.strip():
        git("-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-q", "-m", "bench state")
