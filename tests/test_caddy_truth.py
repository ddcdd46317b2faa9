"""What Caddy really runs, against what the reconciler decides from: on a real Caddy.

- The agent reads Caddy's routes from its admin API (JSON); the tests' model host reads them
  from a fragment's text. Both must give the same answer for every fragment the renderer
  makes, or the safety property would be checked against a kinder host than the real one.
- The cases where the reconciler once reported success with the site down, because it
  believed its own note of what Caddy loaded (see tests/test_safety.py for the same cases in
  the model): Caddy pointed elsewhere by hand, Caddy started by someone else between the
  observation and the load, a strategy switch after a blue-green switch that failed, and
  maintenance while the desired release is quarantined.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from reconciler.agent import caddyconfig
from reconciler.plan.strategies.blue_green import BlueGreen
from reconciler.plan.strategies.single_slot import SingleSlot
from reconciler.render import caddyfile
from tests.deploying import Load, Project, allow_faults, gated_invocation, serves, unit_pid
from tests.test_planner import desired
from tests.testhost import TestHost

pytestmark = pytest.mark.testhost

BACKEND, BLUE, GREEN = (
    "choiros-backend.service",
    "choiros-backend-blue.service",
    "choiros-backend-green.service",
)
FRAGMENT = "/etc/caddy/apps/choiros.caddy"
GATE = "timeout: 4\ninterval: 0.1\nstable: 0.3"


def fragments() -> dict[str, str]:
    """Every shape of fragment the renderer makes."""
    bg = desired("1.0.0", strategy="blue-green")
    out = {
        "single slot, static": SingleSlot(desired("1.0.0")).caddy_text(),
        "single slot, dev server": SingleSlot(desired("1.0.0", mode="dev-server")).caddy_text(),
        "blue": BlueGreen(bg).caddy_text("blue"),
        "green": BlueGreen(bg).caddy_text("green"),
    }
    site = caddyfile.Site(
        "choiros",
        ":80",
        8081,
        "/health",
        static_root="/srv",
        maintenance_flag="/etc/caddy/apps/choiros.maintenance",
        maintenance_page="down.html",
        backend_paths=("/api/*", "/ws"),
        private_paths=("/metrics",),
        spa=True,
        immutable_paths=("/assets/*",),
    )
    out["every route setting"] = caddyfile.render(site)
    legacy = (
        "# Managed by reconciler (choiros): x\n:80 {\n\tencode gzip\n\thandle /api/* {\n"
        "\t\treverse_proxy 127.0.0.1:8082\n\t}\n\thandle {\n\t\troot * /srv\n\t\tfile_server\n\t}\n}\n"
    )
    out["recorded by an older version, upgraded"] = caddyfile.with_switch(legacy, site)
    return out


def agent(host: TestHost, code: str) -> object:
    """Run the agent's own module on the host (its sources are the repository's)."""
    script = f"import json, sys; sys.path.insert(0, '/src'); from reconciler.agent import caddyconfig; {code}"
    return json.loads(host.exec([host.python, "-c", script]).stdout)


def test_the_model_reads_routes_and_marks_as_caddy_does(project: Project) -> None:
    host = project.host
    host.write("/etc/caddy/Caddyfile", b"import /etc/caddy/apps/*.caddy\n")
    host.exec(["mkdir", "-p", "/etc/caddy/apps"])
    for name, text in fragments().items():
        host.write(FRAGMENT, text.encode())
        adapted = json.loads(
            host.exec(["caddy", "adapt", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]).stdout
        )
        # The agent's JSON rule and the model's text rule, on the same configuration.
        assert caddyconfig.upstream_ports(adapted) == caddyconfig.fragment_upstreams(text), name
        assert caddyconfig.fragment_marks(adapted) == {"choiros": caddyconfig.fragment_digest(text)}, name
        host.exec(
            ["caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile", "--force"]
        )
        seen = agent(host, "print(json.dumps(caddyconfig.loaded(open('/etc/caddy/Caddyfile').read(), True)))")
        assert isinstance(seen, dict) and seen["answered"], name
        assert seen["upstreams"] == caddyconfig.fragment_upstreams(text), name
        ports = {str(p): "x" for p in (8080, 8081, 8082, 3000)}
        assert caddyconfig.runs(seen, "choiros", text, ports), name


def test_maintenance_changes_the_answer_without_a_reload_and_never_what_runs(project: Project) -> None:
    host = project.host
    project.write("1.0.0", health=GATE)
    assert project.once().rc == 0
    pid, loaded = unit_pid(host, BACKEND), _loaded_mark(host)
    assert project.reconcile("maintenance", "on", "--reason", "db repair").rc == 0
    page = host.http("/", timeout=5)
    assert page.status == 503 and page.headers.get("Retry-After") == "120"
    assert host.http("/api/version", timeout=5).status == 503
    assert host.http("/health", timeout=5).status == 200, "gates still reach the backend"
    assert _loaded_mark(host) == loaded, "Caddy was not reloaded for it"
    assert project.reconcile("maintenance", "off").rc == 0
    assert serves(host) == "1.0.0"
    assert unit_pid(host, BACKEND) == pid and _loaded_mark(host) == loaded


def _loaded_mark(host: TestHost) -> str:
    seen = agent(host, "print(json.dumps(caddyconfig.loaded(open('/etc/caddy/Caddyfile').read(), True)))")
    assert isinstance(seen, dict)
    return str(seen["marks"].get("choiros"))


def test_maintenance_works_while_the_desired_release_is_quarantined(project: Project) -> None:
    """Case 5: `maintenance on` after a deploy that failed its gate drew no 503 page, and after a
    deploy failed during maintenance, `maintenance off` left the site answering 503."""
    host = project.host
    project.write("1.0.0", health=GATE)
    assert project.once().rc == 0
    project.write("2.1.0-bad", health=GATE)
    assert project.once().rc == 3
    assert project.reconcile("maintenance", "on").rc == 0
    assert host.http("/", timeout=5).status == 503
    again = project.once()
    assert again.rc == 3 and host.http("/", timeout=5).status == 503, "a quarantined run keeps it on"
    assert project.reconcile("maintenance", "off").rc == 0
    assert serves(host) == "1.0.0"

    # On during a deploy that fails, then off: the site serves its last good state again.
    assert project.reconcile("maintenance", "on").rc == 0
    project.write("2.2.0-crash", health="timeout: 4\ninterval: 0.1\nstable: 2")
    assert project.once().rc == 3
    assert host.http("/", timeout=5).status == 503
    assert project.reconcile("maintenance", "off").rc == 0
    assert serves(host) == "1.0.0"
    status = json.loads(project.reconcile("status", "--json").stdout)
    assert status["serving"] == "1.0.0" and not status.get("maintenance")


def test_maintenance_works_on_a_host_held_by_a_rollback_by_hand(project: Project) -> None:
    """A hold keeps what runs; maintenance changes only the answer, so it works held too, and
    leaves the hold as it was."""
    host = project.host
    project.write("1.0.0", health=GATE)
    assert project.once().rc == 0
    project.write("2.0.0", health=GATE)
    assert project.once().rc == 0
    back = project.reconcile("rollback", "--reason", "INC-9")
    assert back.rc == 0 and serves(host) == "1.0.0", back.stdout + back.stderr
    pid = unit_pid(host, BACKEND)
    on = project.reconcile("maintenance", "on", "--reason", "restore the database")
    assert on.rc == 0, on.stdout + on.stderr
    assert host.http("/", timeout=5).status == 503 and host.http("/health", timeout=5).status == 200
    held = project.once()
    assert held.rc == 4 and host.http("/", timeout=5).status == 503, "a held run keeps maintenance on"
    assert project.reconcile("maintenance", "off").rc == 0
    assert serves(host) == "1.0.0" and unit_pid(host, BACKEND) == pid
    status = json.loads(project.reconcile("status", "--json").stdout)
    assert status["held"]["version"] == "1.0.0" and not status.get("maintenance")
    assert project.once().rc == 4, "still held"


def test_caddy_pointed_elsewhere_by_hand_is_seen_and_the_live_colour_never_restarted(
    project: Project,
) -> None:
    """Case 1: with blue-green serving 2.0.0, an admin points the app's fragment at the other
    (warm, gated) colour and reloads Caddy; the next deploy, of a release that fails its gate,
    must go to the colour that does not serve, and no request may reach the failing release."""
    host = project.host
    project.write("1.0.0", strategy="blue-green", health=GATE)
    assert project.once().rc == 0
    project.write("2.0.0", strategy="blue-green", health=GATE)
    assert project.once().rc == 0
    text = (host.read(FRAGMENT) or b"").decode()
    edited = text.replace("127.0.0.1:8082", "127.0.0.1:8081").replace(
        "/opt/choiros/green/", "/opt/choiros/blue/"
    )
    host.write(FRAGMENT, edited.encode())
    host.exec(["caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile", "--force"])
    assert serves(host) == "1.0.0"
    status = json.loads(project.reconcile("status", "--json").stdout)
    assert status["serving"] == "1.0.0", "status says what Caddy routes to, not what was written"
    live = unit_pid(host, BLUE)

    project.write("2.1.0-bad", strategy="blue-green", health=GATE)
    with Load(host, rate=40) as load:
        run = project.once()
        time.sleep(0.5)
    assert run.rc == 3, run.stdout + run.stderr
    assert unit_pid(host, BLUE) == live, "the colour Caddy routed to was restarted"
    assert not load.failed, load.failed[:5]
    assert "2.1.0-bad" not in load.versions, "the failing release answered requests"
    version = serves(host)
    assert version in ("1.0.0", "2.0.0")
    assert json.loads(project.reconcile("status", "--json").stdout)["serving"] == version
    routed = BLUE if version == "1.0.0" else GREEN
    assert gated_invocation(host, routed)


def test_caddy_started_by_someone_else_before_the_load_is_reloaded(project: Project) -> None:
    """Case 2: Caddy down when observed, started (with the files then on disk) before the
    fragment was written: a plan-time `start` would have been a no-op, and the new fragment
    never loaded while the reconciler said it was."""
    host = project.host
    allow_faults(host)
    project.write("1.0.0", health=GATE)
    assert project.once().rc == 0
    host.exec(["systemctl", "stop", "caddy"])
    project.write("2.0.0", health=GATE)
    plan = project.once("--dry-run")
    steps = [(a["action"], a["target"]) for a in plan.json["actions"]]
    write = steps.index(("validate+write", FRAGMENT)) + 1
    done: dict[str, object] = {}
    runner = threading.Thread(
        target=lambda: done.update(run=project.once(env={"RECONCILER_FAULT_PAUSE_BEFORE": f"{write}:4"}))
    )
    runner.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and unit_pid(host, BACKEND) == 0:
        time.sleep(0.1)
    # The backend restarted, its gate passed: the agent now waits before writing the fragment.
    time.sleep(2)
    host.exec(["systemctl", "start", "caddy"])  # another app, or systemd, starts it
    runner.join(120)
    run = done["run"]
    assert run.rc == 0, run.stdout + run.stderr  # type: ignore[attr-defined]
    assert serves(host) == "2.0.0", "Caddy runs the fragment that was written"
    assert json.loads(project.reconcile("status", "--json").stdout)["serving"] == "2.0.0"
    assert project.once("--dry-run").rc == 0


def test_back_to_restart_after_a_blue_green_switch_that_failed_afterwards(project: Project) -> None:
    """Case 3: a blue-green run switches Caddy to a release that crash-loops afterwards, and is
    killed before it finishes; a return to `restart` whose release fails its gate must not
    "roll back" to the crash-looping colour, and status must say what serves."""
    host = project.host
    allow_faults(host)
    project.write("1.0.0", health=GATE)
    assert project.once().rc == 0
    project.write("2.2.0-crash", strategy="blue-green", health=GATE)
    plan = project.once("--dry-run")
    steps = [(a["action"], a["target"]) for a in plan.json["actions"]]
    reload = steps.index(("reload", "caddy.service")) + 1
    killed = project.once(env={"RECONCILER_FAULT_AFTER_ACTION": str(reload)})
    assert killed.rc != 0
    time.sleep(2)  # the colour Caddy now routes to crashes, and systemd restarts it
    assert not gated_invocation(host, BLUE)

    project.write("2.1.0-bad", health=GATE)
    run = project.once("--lock-timeout", "30")
    assert run.rc == 3, run.stdout + run.stderr
    assert serves(host) == "1.0.0"
    assert gated_invocation(host, BACKEND)
    fragment = (host.read(FRAGMENT) or b"").decode()
    assert caddyconfig.fragment_upstreams(fragment) == [8080], fragment
    assert json.loads(project.reconcile("status", "--json").stdout)["serving"] == "1.0.0"
    assert project.once().rc == 3, "the same file again: still quarantined, nothing else to do"
