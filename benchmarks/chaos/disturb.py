"""Doing the disturbances on the test host, and what each did.

Each one records when it ran and, for those that take the site down by themselves (a Caddy
restart, a reboot, Caddy pointed at a port where nothing listens), the outage window it
causes: failed requests inside it are the disturbance's, not the deploy's. A reboot also
records the invocations systemd started at boot, before any run could gate them.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks.chaos.plan import Disturbance
from tests.deploying import Project, allow_faults
from tests.testhost import TestHost

APP = "choiros"
FRAGMENT = f"/etc/caddy/apps/{APP}.caddy"
GATES = f"/var/lib/reconciler/{APP}/gates.json"
COLOUR_PORTS = {"blue": 8081, "green": 8082}
DEAD_PORT = 8089  # nothing of the app listens there
UPSTREAM = re.compile(r"reverse_proxy 127\.0\.0\.1:(\d+)")
CADDY_RELOAD = ["caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile", "--force"]


@dataclass
class Done:
    """What one disturbance did."""

    kind: str
    planned: str  # Disturbance.label
    start: float = 0.0  # time.monotonic()
    end: float = 0.0
    outcome: str = ""
    outage: tuple[float, float] | None = None  # the site down by the disturbance's own doing
    outage_until_run: bool = False  # ... and until the next completed run repaired it
    booted: set[str] = field(default_factory=set)  # invocations systemd started at a reboot

    def describe(self) -> str:
        return f"{self.planned}: {self.outcome}"


def app_units(host: TestHost) -> list[str]:
    out = host.exec(
        ["systemctl", "list-units", "--all", "--plain", "--no-legend", f"{APP}-*"], check=False
    ).stdout
    return sorted({line.split()[0] for line in out.splitlines() if line.strip()})


def invocations(host: TestHost, units: list[str]) -> dict[str, tuple[str, str]]:
    """unit -> (ActiveState, InvocationID), in one exec."""
    if not units:
        return {}
    out = host.exec(
        ["systemctl", "show", "-p", "Id", "-p", "ActiveState", "-p", "InvocationID", *units], check=False
    ).stdout
    found: dict[str, tuple[str, str]] = {}
    for block in out.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if fields.get("Id"):
            found[fields["Id"]] = (fields.get("ActiveState", ""), fields.get("InvocationID", ""))
    return found


def gate_records(host: TestHost) -> dict[str, dict[str, str]]:
    raw = host.read(GATES)
    data = json.loads(raw or b"{}")
    return data if isinstance(data, dict) else {}


def wait_serving(host: TestHost, timeout: float = 30.0) -> float:
    """Until the site answers the API with 200 again; returns when (time.monotonic())."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if host.http("/api/version", timeout=3).status == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    return time.monotonic()


class Disturber:
    def __init__(self, host: TestHost, project: Project, other: Project, strategy: str) -> None:
        self.host = host
        self.project = project
        self.other = other  # the second app on the host
        self.strategy = strategy
        self.other_version = "1.0.0"

    def do(self, d: Disturbance, controller: Callable[[], subprocess.Popen[str] | None]) -> Done:
        done = Done(d.kind, d.label, start=time.monotonic())
        try:
            done.outcome = getattr(self, "_" + d.kind.replace("-", "_"))(d, done, controller)
        except Exception as exc:  # a disturbance that could not be done is said, never hidden
            done.outcome = f"could not be done: {type(exc).__name__}: {str(exc)[:200]}"
        done.end = time.monotonic()
        return done

    def _kill_controller(self, d: Disturbance, done: Done, controller: Callable[[], object]) -> str:
        proc = controller()
        if not isinstance(proc, subprocess.Popen) or proc.poll() is not None:
            return "the run had ended before"
        proc.kill()
        return "killed"

    def _kill_agent(self, d: Disturbance, done: Done, controller: Callable[[], object]) -> str:
        return "fault point set"  # by the run's environment (fault_env); the run's output says more

    def _caddy_restart(self, d: Disturbance, done: Done, controller: Callable[[], object]) -> str:
        result = self.host.exec(["systemctl", "restart", "caddy"], check=False, timeout=90)
        back = wait_serving(self.host)
        done.outage = (done.start, back)
        return f"exit {result.rc}, serving again {back - done.start:.1f} s after"

    def _caddy_reload(self, d: Disturbance, done: Done, controller: Callable[[], object]) -> str:
        result = self.host.exec(CADDY_RELOAD, check=False, timeout=90)
        return f"exit {result.rc}" + (f": {result.stderr.strip()[-160:]}" if result.rc else "")

    def _other_app(self, d: Disturbance, done: Done, controller: Callable[[], object]) -> str:
        self.other_version = "2.0.0" if self.other_version == "1.0.0" else "1.0.0"
        self.other.write(self.other_version, **OTHER_APP)
        run = self.other.once("--lock-timeout", "180", timeout=400)
        try:
            result = run.json.get("result")
        except ValueError:
            result = (run.stdout + run.stderr).strip()[-160:]
        return f"{self.other.app} to {self.other_version}: exit {run.rc}, {result}"

    def _reboot(self, d: Disturbance, done: Done, controller: Callable[[], object]) -> str:
        took = self.host.reboot(timeout=120)
        allow_faults(self.host)  # /run is new
        states = invocations(self.host, app_units(self.host))
        done.booted = {inv for active, inv in states.values() if inv}
        back = wait_serving(self.host)
        done.outage = (done.start, back)
        return f"up in {took:.1f} s, serving again {back - done.start:.1f} s after"

    def _edit_fragment(self, d: Disturbance, done: Done, controller: Callable[[], object]) -> str:
        text = (self.host.read(FRAGMENT) or b"").decode()
        ports = sorted(set(UPSTREAM.findall(text)))
        if not ports:
            return "no fragment to edit"
        target, reload = DEAD_PORT, d.arg == "reload"
        if self.strategy == "blue-green":
            # The admin of the issue: Caddy pointed at the other colour, warm and gated.
            others = [c for c, p in COLOUR_PORTS.items() if str(p) not in ports]
            other = others[0] if len(others) == 1 else None
            unit = f"{APP}-backend-{other}.service" if other else ""
            states = invocations(self.host, [unit]) if unit else {}
            record = gate_records(self.host).get(unit) or {}
            active, inv = states.get(unit, ("", ""))
            if other and active == "active" and inv and record.get("invocation") == inv:
                target, reload = COLOUR_PORTS[other], True
            else:
                reload = False  # no gated colour to point at: the file alone, for the next run
        edited = UPSTREAM.sub(f"reverse_proxy 127.0.0.1:{target}", text)
        self.host.write(FRAGMENT, edited.encode())
        said = f"{'+'.join(ports)} -> {target}"
        if target == DEAD_PORT:
            done.outage = (done.start, done.start)
            done.outage_until_run = True  # whoever loads it next takes the site down
        if reload:
            result = self.host.exec(CADDY_RELOAD, check=False, timeout=90)
            said += f", Caddy reloaded (exit {result.rc})"
        return said

    def _edit_unit(self, d: Disturbance, done: Done, controller: Callable[[], object]) -> str:
        units = [u for u in app_units(self.host) if u.endswith(".service")]
        edited = []
        for unit in units:
            path = f"/etc/systemd/system/{unit}"
            text = (self.host.read(path) or b"").decode()
            if "Description=" in text:
                self.host.write(path, re.sub(r"Description=.*", "Description=edited by hand", text).encode())
                edited.append(unit)
        if d.arg == "daemon-reload" and edited:
            self.host.exec(["systemctl", "daemon-reload"], check=False)
        reloaded = " + daemon-reload" if d.arg == "daemon-reload" else ""
        return f"{', '.join(edited) or 'no unit file'}{reloaded}"

    def _edit_env(self, d: Disturbance, done: Done, controller: Callable[[], object]) -> str:
        listed = self.host.exec(["sh", "-c", f"ls /etc/{APP}/*.env 2>/dev/null"], check=False).stdout.split()
        for path in listed:
            text = (self.host.read(path) or b"").decode()
            self.host.write(path, (text + "EDITED_BY_HAND=1\n").encode(), mode=0o640)
        return ", ".join(listed) or "no env file"


# The second app on the host: blue-green on its own site name and ports, as in
# tests/test_shared_host.py.
OTHER_SITE = "notes.example"
OTHER_APP = {
    "proxy": f'site: "http://{OTHER_SITE}"',
    "backend": "command: bin/backend --port {port}\nport: 9080",
    "strategy": "blue-green",
    "health": "timeout: 15\ninterval: 0.1\nstable: 0.3",
}


def fault_env(disturbances: tuple[Disturbance, ...]) -> dict[str, str]:
    """The controller's environment for a kill-agent disturbance (the host honours it only
    with /run/reconciler/fault-injection, which the soak makes)."""
    for d in disturbances:
        if d.kind == "kill-agent":
            how, _, rest = d.arg.partition(":")
            if how == "after":
                return {"RECONCILER_FAULT_AFTER_ACTION": rest}
            return {"RECONCILER_FAULT_DURING_ACTION": rest}
    return {}
