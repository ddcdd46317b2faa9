"""Helpers for integration tests: write a desired-state file, run the real `reconcile` CLI
against a test host, and look at what the host serves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.agent.protocol import PROTOCOL
from reconciler.executors.ssh import SSHExecutor
from reconciler.executors.ssh_options import SSHOptions
from reconciler.spec.model import Target
from tests.testhost import TestHost

REPO = Path(__file__).resolve().parent.parent
APP = "choiros"

# Everything the reconciler may create for the app; reset between tests.
# The apps tests deploy: the example app, and a second one beside it on the same host.
APPS = (APP, "notes")
# Everything the reconciler may create for an app; reset between tests.
RESET_APP = """
for u in $(systemctl list-units --all --plain --no-legend '{app}-*' | awk '{{print $1}}'); do
  systemctl stop "$u" 2>/dev/null; systemctl disable "$u" 2>/dev/null
done
systemctl reset-failed '{app}-*' 2>/dev/null
rm -f /etc/systemd/system/{app}-*.service
rm -rf /opt/{app} /etc/{app} /var/lib/{app} /srv/{app}
"""
RESET_SCRIPT = (
    "set -u\n"
    + "".join(RESET_APP.format(app=app) for app in APPS)
    + """
rm -rf /var/lib/reconciler /srv/reconciler
command -v podman >/dev/null && podman rm -af >/dev/null 2>&1 && podman rmi -af >/dev/null 2>&1
if command -v docker >/dev/null; then
  docker ps -aq | xargs -r docker rm -f >/dev/null 2>&1
  docker images -q | sort -u | xargs -r docker rmi -f >/dev/null 2>&1
fi
[ -f /root/Caddyfile.orig ] || cp /etc/caddy/Caddyfile /root/Caddyfile.orig
cp /root/Caddyfile.orig /etc/caddy/Caddyfile
rm -f /etc/caddy/.Caddyfile.*
rm -rf /etc/caddy/apps /run/reconciler/host.lock
rm -f /run/reconciler/fault-injection
systemctl daemon-reload
systemctl restart caddy
true
"""
)

# The paths a reconcile run may touch, for byte-for-byte comparisons.
WATCHED_PATHS = [
    "/opt",
    "/etc/systemd/system",
    "/etc/caddy",
    f"/etc/{APP}",
    "/var/lib/reconciler",
    f"/var/lib/{APP}",
]


def reset_host(host: TestHost) -> None:
    host.exec(["bash", "-c", RESET_SCRIPT], timeout=60)


def allow_faults(host: TestHost) -> None:
    """Let the agent on this host honour the fault points a test sends (RECONCILER_FAULT_*):
    without this file, written by root on the host itself, it ignores them."""
    host.exec(["bash", "-c", "mkdir -p /run/reconciler && touch /run/reconciler/fault-injection"])


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)  # type: ignore[no-any-return]

    def actions(self) -> list[tuple[str, str]]:
        return [(a["action"], a["target"]) for a in self.json["actions"]]


@dataclass
class Project:
    """A folder like a user's repository: desired-state.yaml plus built artifacts."""

    root: Path
    artifacts: dict[str, Path]
    host: TestHost
    app: str = APP

    def write(self, version: str = "1.0.0", *, body: str | None = None, **fields: Any) -> Path:
        """Write desired-state.yaml for `version`; `fields` are top-level YAML snippets."""
        path = self.root / "desired-state.yaml"
        if body is None:
            body = self.render(version, **fields)
        path.write_text(body, encoding="utf-8")
        return path

    def render(self, version: str = "1.0.0", **fields: Any) -> str:
        source = self.artifacts.get(version, Path(f"missing-{version}.tar.gz"))
        sections = {
            "strategy": "symlink-swap",
            "frontend": "mode: static",
            "backend": "command: bin/backend --port {port}\nport: 8080",
            "health": "timeout: 15\ninterval: 0.1\nstable: 0.3",
            "env": f"DATABASE_PATH: /var/lib/{self.app}/{self.app}.db\nCORS_ALLOW_ORIGINS: https://choir.example",
        }
        sections.update({k: v for k, v in fields.items() if v is not None})
        text = f"""\
app: {self.app}
target: {self.host.ssh_target}
release:
  version: "{version}"
  source: {source}
"""
        for key, value in sections.items():
            if "\n" in value or ":" in value:
                text += f"{key}:\n{textwrap.indent(value, '  ')}\n"
            else:
                text += f"{key}: {value}\n"
        return text

    def command(self, *args: str, known_hosts: Path | None = None) -> list[str]:
        """The `reconcile` command line for this project and its host."""
        return [
            sys.executable,
            "-m",
            "reconciler",
            *args,
            "-f",
            str(self.root / "desired-state.yaml"),
            "-i",
            str(self.host.key_path),
            "--known-hosts",
            str(known_hosts or self.host.known_hosts),
        ]

    def reconcile(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        known_hosts: Path | None = None,
    ) -> Run:
        cmd = self.command(*args, known_hosts=known_hosts)
        full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=self.root, check=False
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def killed_when(self, *args: str, when: Callable[[str], bool], delay: float = 0.0) -> list[str]:
        """Run `reconcile`, read what it prints, and SIGKILL it (the controller, not the agent
        on the host) `delay` seconds after the first line `when` accepts. Returns the lines."""
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen(
            self.command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert proc.stdout is not None
        lines = []
        try:
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if when(line):
                    time.sleep(delay)
                    proc.kill()
                    break
        finally:
            proc.kill()
            proc.wait(30)
        return lines

    def once(self, *args: str, **kw: Any) -> Run:
        return self.reconcile("--once", "--json", *args, **kw)


class Load:
    """A steady trickle of requests through Caddy while something happens: what failed, and
    which versions answered."""

    def __init__(
        self, host: TestHost, rate: float = 50, path: str = "/api/version", site: str | None = None
    ) -> None:
        self.host = host
        self.path = path
        self.headers = {"Host": site} if site else None
        self.interval = 1 / rate
        self.sent = 0
        self.failed: list[str] = []
        self.versions: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            self.sent += 1
            try:
                answer = self.host.http(self.path, timeout=5, headers=self.headers)
                if answer.status != 200:
                    self.failed.append(f"HTTP {answer.status}")
                elif answer.text.startswith("{"):
                    self.versions.add(str(json.loads(answer.text).get("version")))
            except (OSError, ValueError) as exc:
                self.failed.append(repr(exc))
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def gated_invocation(host: TestHost, unit: str) -> bool:
    """The unit's running process has a gate record on the host (gates.json)."""
    invocation = host.exec(["systemctl", "show", "-p", "InvocationID", "--value", unit]).stdout.strip()
    raw = host.exec(["cat", f"/var/lib/reconciler/{APP}/gates.json"], check=False).stdout
    record = json.loads(raw or "{}").get(unit) or {}
    return bool(invocation) and record.get("invocation") == invocation


def serves_site(host: TestHost, site: str) -> str | None:
    """The version a name-based site answers with (its backend, through Caddy)."""
    api = host.http("/api/version", timeout=5, headers={"Host": site})
    return str(json.loads(api.text)["version"]) if api.status == 200 else None


def serves(host: TestHost) -> str | None:
    """The release version the site serves: the page and the backend (through Caddy) must agree."""
    page = host.http("/", timeout=5)
    api = host.http("/api/version", timeout=5)
    if page.status != 200 or api.status != 200:
        return None
    version = json.loads(api.text)["version"]
    assert f"choiros {version}" in page.text, f"page and backend disagree: {page.text[:200]}"
    return str(version)


def serves_once_settled(host: TestHost) -> str | None:
    """`serves` for polling a host while something switches it: the page and the API are two
    requests, and a Caddy reload between them makes them disagree for a moment. That is "not
    yet" (None) here; check the end state with `serves`, which fails on a disagreement."""
    try:
        return serves(host)
    except AssertionError:
        return None


def unit_pid(host: TestHost, unit: str) -> int:
    out = host.exec(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout.strip()
    return int(out or 0)


def build_artifacts(out: Path) -> dict[str, Path]:
    """The example app built as CI would, including releases that fail in known ways."""
    sys.path.insert(0, str(REPO / "examples" / "app"))
    import build  # type: ignore[import-not-found]

    artifacts: dict[str, Path] = {}
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        artifacts[version], _ = build.build(version, out)
    artifacts["2.1.0-bad"], _ = build.build("2.1.0-bad", out, fault="health-500")
    artifacts["2.2.0-crash"], _ = build.build("2.2.0-crash", out, fault="crash")
    artifacts["2.4.0-slow"], _ = build.build("2.4.0-slow", out, fault="slow-start")
    artifacts["2.5.0-chdir"], _ = build.build("2.5.0-chdir", out, fault="chdir")
    # A release whose backend answers with another version, as an old process would.
    liar, _ = build.build("2.3.0-liar", out, fmt="dir")
    (liar / "VERSION").write_text("1.0.0\n")
    artifacts["2.3.0-liar"] = liar
    return artifacts


def agents_python(host: TestHost) -> str:
    """The Python version the agent reports from the host, asked over SSH as a run asks."""
    options = SSHOptions(identity=(str(host.key_path),), known_hosts=str(host.known_hosts))
    executor = SSHExecutor(Target("ssh", host=host.address, user="root", port=22), options)
    try:
        answer = executor.request(
            {
                "op": "observe",
                "protocol": PROTOCOL,
                "observe": {"state": "/var/lib/reconciler/choiros", "releases": "/opt/choiros/releases"},
            }
        )
    finally:
        executor.close()
    assert answer["event"] == "result", answer
    return str(answer["snapshot"]["host"]["python"])
