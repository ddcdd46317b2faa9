"""The planner, tested directly: minimal plans for each kind of change, and a hypothesis
property that one plan converges any host and the plan after it is empty."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.agent import caddyconfig
from reconciler.errors import InvalidDesiredState
from reconciler.observe.snapshot import (
    CADDY_UNIT,
    CaddyState,
    FileState,
    LinkState,
    Observed,
    QuarantineEntry,
    ReleaseState,
    UnitState,
    UserState,
    parse,
    request_for,
)
from reconciler.plan import identity, routing
from reconciler.plan.actions import (
    CheckHealth,
    LinkShared,
    LoadCaddy,
    Plan,
    RunTask,
    SetSymlink,
    Systemctl,
    UploadRelease,
    WriteCaddyfile,
    WriteFile,
)
from reconciler.plan.planner import plan
from reconciler.plan.strategies import for_host
from reconciler.plan.strategies.blue_green import BlueGreen, other
from reconciler.plan.strategies.single_slot import SingleSlot
from reconciler.render import envfile, units
from reconciler.spec.load import load_bytes
from reconciler.spec.model import DesiredState
from tests.model_host import ModelHost

BACKEND = "choiros-backend.service"
FRONTEND = "choiros-frontend.service"
UNIT_DIR = "/etc/systemd/system"


def desired(
    version: str = "1.0.0",
    strategy: str = "symlink-swap",
    mode: str = "static",
    env: dict[str, str] | None = None,
    port: int = 8080,
    idle: str = "warm",
    keep: int = 5,
    image: bool = False,
    data: str = "",
    tasks: str = "",
    frontend_image: str | None = None,
    runtime: str | None = None,
    flags: str = "",
    maintenance: bool = False,
) -> DesiredState:
    env = {"DATABASE_PATH": "/var/lib/choiros/choiros.db"} if env is None else env
    env_yaml = "".join(f"  {k}: {v!r}\n" for k, v in env.items()) or "  {}\n"
    command = "bin/backend --port {port}" if strategy == "blue-green" else f"bin/backend --port {port}"
    image_line = f"  image: localhost/choiros:{version}\n" if image else ""
    if runtime:
        image_line += f"  runtime: {runtime}\n"
    frontend_line = f"  image: {frontend_image}\n" if frontend_image else ""
    if image:
        command = "python3 " + command
    if flags:
        command += " " + flags
    text = f"""
app: choiros
target: local
release:
  version: "{version}"
  source: dist/choiros-{version}.tar.gz
{image_line}  keep: {keep}
{tasks}
strategy: {strategy}
frontend:
  mode: {mode}
{frontend_line}  dev_command: bin/frontend-dev --port 3000
  dev_port: 3000
blue_green:
  idle: {idle}
backend:
  command: {command}
  port: {port}
env:
{env_yaml}{data}{"proxy: {maintenance: true}" if maintenance else ""}"""
    return load_bytes(text.encode(), "desired-state.yaml", base_dir=Path("/src"))


BLUE = "choiros-backend-blue.service"
GREEN = "choiros-backend-green.service"
ALL_UNITS = (BACKEND, FRONTEND, BLUE, GREEN)


# The Caddyfile Caddy's packages ship (Debian's 2.6.2 here), byte for byte.
STOCK_CADDYFILE = (Path(__file__).parent / "stock.Caddyfile").read_text()
FRAGMENT = "/etc/caddy/apps/choiros.caddy"


def empty_host(caddy_active: bool = True, caddyfile: str | None = STOCK_CADDYFILE) -> Observed:
    files: dict[str, FileState | None] = {
        **{f"{UNIT_DIR}/{u}": None for u in ALL_UNITS},
        "/etc/choiros/backend.env": None,
        "/etc/choiros/backend-blue.env": None,
        "/etc/choiros/backend-green.env": None,
        FRAGMENT: None,
        "/etc/caddy/Caddyfile": None
        if caddyfile is None
        else FileState("file", caddyfile, hashlib.sha256(caddyfile.encode()).hexdigest(), 0o644),
    }
    caddy = UnitState(
        CADDY_UNIT,
        load="loaded",
        active="active" if caddy_active else "inactive",
        sub="running",
        enabled="enabled",
        main_pid=50,
    )
    return Observed(
        hostname="test",
        files=MappingProxyType(files),
        links=MappingProxyType({"/opt/choiros/current": None, "/opt/choiros/previous": None}),
        releases=MappingProxyType({}),
        units=MappingProxyType(
            {BACKEND: UnitState(BACKEND), FRONTEND: UnitState(FRONTEND), CADDY_UNIT: caddy}
        ),
        commands=MappingProxyType({"caddy": "/usr/bin/caddy", "systemctl": "/usr/bin/systemctl"}),
        caddy=CaddyState(answered=caddy_active),
        quarantine=MappingProxyType({}),
        lock_holder=None,
        fingerprint="fp",
    )


def converge(d: DesiredState, host: Observed) -> tuple[Plan, Observed]:
    p = plan(d, host)
    return p, ModelHost(host).apply_plan(p)


def assert_runs_desired(d: DesiredState, host: Observed) -> None:
    """Independent of the planner's rules: what runs is what the files on disk describe."""
    release = f"/opt/choiros/releases/{d.release.version}"
    assert d.release.version in host.releases
    assert host.link("/opt/choiros/current") == LinkState("symlink", f"releases/{d.release.version}", True)
    caddy_text = host.content(FRAGMENT)
    assert caddy_text is not None
    if d.strategy == "blue-green":
        routed = routing.routed_colours(d, host)
        assert len(routed) == 1, f"Caddy routes to {routed}"
        colour = routed[0]
        strategy = for_host(d, host)
        assert isinstance(strategy, BlueGreen)
        wanted = {f"choiros-backend-{colour}.service": strategy.text(colour)}
        env_files = {f"choiros-backend-{colour}.service": d.colour_env_file(colour)}
        assert host.link(f"/opt/choiros/{colour}") == LinkState(
            "symlink", f"releases/{d.release.version}", True
        )
        assert caddy_text == strategy.caddy_text(colour)
        for name in (BACKEND, FRONTEND):
            assert host.content(f"{UNIT_DIR}/{name}") is None and not host.unit(name).is_active
        idle = other(colour)
        if d.blue_green.idle == "stop":
            assert not host.unit(f"choiros-backend-{idle}.service").is_active
    else:
        slot = for_host(d, host)
        assert isinstance(slot, SingleSlot)
        wanted = slot.texts()
        env_files = {BACKEND: d.layout.env_file}
        assert caddy_text == SingleSlot(d).caddy_text()
        for name in (BLUE, GREEN):
            assert host.content(f"{UNIT_DIR}/{name}") is None and not host.unit(name).is_active
    for name, text in wanted.items():
        unit = host.unit(name)
        assert host.content(f"{UNIT_DIR}/{name}") == text
        assert unit.is_active and unit.is_enabled and not unit.need_daemon_reload
        assert unit.environ.get(units.RELEASE_VAR) == d.release.version
        if d.release.image:
            assert d.release.image in host.images
        else:
            assert unit.cwd == release
        assert unit.environ.get(units.HASH_VAR) == units.marker_of(text)
        assert host.gated(name), f"{name} serves without a gate record"
    if FRONTEND not in wanted:
        assert host.content(f"{UNIT_DIR}/{FRONTEND}") is None and not host.unit(FRONTEND).is_active
    fp = for_host(d, host).config
    for name, path in env_files.items():
        assert host.content(path) == envfile.render("choiros", d.env, fp)
        assert host.unit(name).environ.get(envfile.CONFIG_VAR) == fp
    assert host.good and host.good[0].config == fp
    assert host.unit(CADDY_UNIT).is_active
    assert routing.loaded(d, host, caddy_text), "Caddy runs the fragment on disk"


def labels(p: Plan) -> list[tuple[str, str]]:
    return [(a.summary()["action"], a.target) for a in p.actions]


def deployed(d: DesiredState | None = None) -> Observed:
    _, host = converge(d or desired(), empty_host())
    return host


# --- minimal plans --------------------------------------------------------------------------


def test_fresh_host_gets_everything_in_phase_order() -> None:
    p, after = converge(desired(), empty_host())
    assert labels(p) == [
        ("upload", "/opt/choiros/releases/1.0.0"),
        ("write", f"{UNIT_DIR}/{BACKEND}"),
        ("write", "/etc/choiros/backend.env"),
        ("daemon-reload", "systemd"),
        ("symlink", "/opt/choiros/current -> releases/1.0.0"),
        ("enable", BACKEND),
        ("start", BACKEND),
        ("health-check", "http://127.0.0.1:8080/health"),
        ("validate+write", FRAGMENT),
        ("validate+write", "/etc/caddy/Caddyfile"),
        ("reload", CADDY_UNIT),
        ("record-good", "1.0.0"),
    ]
    assert all(a.reason for a in p.actions)
    assert "stock welcome page" in p.actions[9].reason
    assert plan(desired(), after).actions == ()


def test_second_run_plans_nothing() -> None:
    host = deployed()
    assert not plan(desired(), host).changed


def test_version_bump_uploads_swaps_and_restarts_only_the_backend() -> None:
    host = deployed()
    p, after = converge(desired("2.0.0"), host)
    assert labels(p) == [
        ("upload", "/opt/choiros/releases/2.0.0"),
        ("write", f"{UNIT_DIR}/{BACKEND}"),
        ("write", "/etc/choiros/backend.env"),
        ("daemon-reload", "systemd"),
        ("symlink", "/opt/choiros/previous -> releases/1.0.0"),
        ("symlink", "/opt/choiros/current -> releases/2.0.0"),
        ("restart", BACKEND),
        ("health-check", "http://127.0.0.1:8080/health"),
        ("validate+write", FRAGMENT),
        ("reload", CADDY_UNIT),
        ("record-good", "2.0.0"),
    ]
    restart = p.actions[6]
    assert "runs release 1.0.0, desired 2.0.0" in restart.reason
    assert not plan(desired("2.0.0"), after).changed


def test_revert_swaps_back_without_upload() -> None:
    host = deployed()
    _, host = converge(desired("2.0.0"), host)
    p, after = converge(desired("1.0.0"), host)
    assert not any(isinstance(a, UploadRelease) for a in p.actions)
    assert labels(p)[3:5] == [
        ("symlink", "/opt/choiros/previous -> releases/2.0.0"),
        ("symlink", "/opt/choiros/current -> releases/1.0.0"),
    ]
    assert not plan(desired("1.0.0"), after).changed


def test_restart_strategy_does_not_keep_previous() -> None:
    host = deployed(desired(strategy="restart"))
    p = plan(desired("2.0.0", strategy="restart"), host)
    assert not any(isinstance(a, SetSymlink) and a.path.endswith("previous") for a in p.actions)


def test_hand_edited_caddyfile_is_written_and_reloaded_only() -> None:
    host = deployed()
    path = FRAGMENT
    files = dict(host.files)
    files[path] = FileState("file", ":80 {\n\trespond hacked\n}\n", "x", 0o644)
    p = plan(desired(), replace(host, files=MappingProxyType(files)))
    assert labels(p) == [("validate+write", path), ("reload", CADDY_UNIT)]
    assert p.actions[0].on_failure == "rollback" and p.rollback is not None


def test_caddyfile_written_but_never_loaded_is_reloaded() -> None:
    host = deployed()
    host = replace(host, caddy=replace(host.caddy, marks=MappingProxyType({"choiros": "an older one"})))
    p = plan(desired(), host)
    assert labels(p) == [("reload", CADDY_UNIT)]
    assert "does not run /etc/caddy/apps/choiros.caddy as it is on disk" in p.actions[0].reason


def _edit_unit(host: Observed, old: str, new: str) -> Observed:
    path = f"{UNIT_DIR}/{BACKEND}"
    files = dict(host.files)
    content = files[path].content  # type: ignore[union-attr]
    assert content is not None and old in content
    files[path] = FileState("file", content.replace(old, new), "x", 0o644)
    return replace(host, files=MappingProxyType(files))


def test_description_only_change_needs_no_restart() -> None:
    host = _edit_unit(deployed(), "Description=choiros backend", "Description=hand edited")
    p = plan(desired(), host)
    assert labels(p) == [("write", f"{UNIT_DIR}/{BACKEND}"), ("daemon-reload", "systemd")]
    assert "Unit.Description" in p.actions[0].reason


def test_execstart_change_restarts() -> None:
    host = deployed()
    # The unit on disk and the running process both come from another command line.
    host = _edit_unit(host, "--port 8080", "--port 9999")
    units = dict(host.units)
    units[BACKEND] = replace(
        units[BACKEND], environ=MappingProxyType({**units[BACKEND].environ, "RECONCILER_UNIT_HASH": "0000"})
    )
    p = plan(desired(), replace(host, units=MappingProxyType(units)))
    assert labels(p) == [
        ("write", f"{UNIT_DIR}/{BACKEND}"),
        ("daemon-reload", "systemd"),
        ("restart", BACKEND),
        ("health-check", "http://127.0.0.1:8080/health"),
    ]
    assert "Service.ExecStart" in p.actions[2].reason


def test_unit_written_before_a_crash_is_still_restarted() -> None:
    """Level-triggered: the file is already right, but the process runs the old definition."""
    host = deployed()
    units = dict(host.units)
    units[BACKEND] = replace(
        units[BACKEND], environ=MappingProxyType({**units[BACKEND].environ, "RECONCILER_UNIT_HASH": "old"})
    )
    p = plan(desired(), replace(host, units=MappingProxyType(units)))
    assert labels(p) == [("restart", BACKEND), ("health-check", "http://127.0.0.1:8080/health")]
    assert "older unit definition" in p.actions[0].reason


def test_need_daemon_reload_alone_gives_daemon_reload() -> None:
    host = deployed()
    units = dict(host.units)
    units[BACKEND] = replace(units[BACKEND], need_daemon_reload=True)
    p = plan(desired(), replace(host, units=MappingProxyType(units)))
    assert labels(p) == [("daemon-reload", "systemd")]


def test_env_change_restarts_backend_only_and_never_shows_values() -> None:
    host = deployed(desired(mode="dev-server"))
    new = desired(
        mode="dev-server", env={"DATABASE_PATH": "/var/lib/choiros/choiros.db", "API_TOKEN": "s3cr3t-value"}
    )
    p, after = converge(new, host)
    assert labels(p) == [
        ("write", "/etc/choiros/backend.env"),
        ("restart", BACKEND),
        ("health-check", "http://127.0.0.1:8080/health"),
        ("record-good", "1.0.0"),
    ]
    assert "API_TOKEN" in p.actions[0].reason
    assert "s3cr3t" not in repr(p.summaries())
    assert not plan(new, after).changed


def test_stopped_unit_is_started() -> None:
    host = deployed()
    units = dict(host.units)
    units[BACKEND] = replace(
        units[BACKEND], active="failed", sub="failed", main_pid=0, cwd=None, environ=MappingProxyType({})
    )
    p = plan(desired(), replace(host, units=MappingProxyType(units)))
    assert labels(p) == [("start", BACKEND), ("health-check", "http://127.0.0.1:8080/health")]
    assert "failed" in p.actions[0].reason


def test_static_to_dev_server_is_make_before_break() -> None:
    p, after = converge(desired(mode="dev-server"), deployed())
    order = labels(p)
    start_fe = order.index(("start", FRONTEND))
    reload_caddy = order.index(("reload", CADDY_UNIT))
    assert start_fe < reload_caddy
    assert any(isinstance(a, CheckHealth) and a.unit == FRONTEND for a in p.actions[start_fe:reload_caddy])
    assert not plan(desired(mode="dev-server"), after).changed


def test_dev_server_to_static_stops_the_dev_server_after_caddy_switched() -> None:
    p, after = converge(desired(mode="static"), deployed(desired(mode="dev-server")))
    order = labels(p)
    assert order.index(("reload", CADDY_UNIT)) < order.index(("stop", FRONTEND))
    assert ("remove", f"{UNIT_DIR}/{FRONTEND}") in order
    assert not plan(desired(mode="static"), after).changed


def test_caddy_stopped_is_started_not_reloaded() -> None:
    p, after = converge(desired(), empty_host(caddy_active=False))
    caddy = [a for a in p.actions if isinstance(a, LoadCaddy)]
    assert [a.reason for a in caddy] == ["caddy.service is inactive: it is started"]
    assert not plan(desired(), after).changed


def test_quarantined_version_is_not_planned() -> None:
    """An entry written by an older reconciler names a whole version."""
    legacy = QuarantineEntry("2.0.0", "health check failed", None)
    host = replace(deployed(), quarantine=MappingProxyType({"2.0.0": legacy}))
    p = plan(desired("2.0.0"), host)
    assert p.quarantined == "health check failed" and not p.actions
    assert plan(desired("2.0.0"), host, retry_quarantined=True).changed


def test_blockers_when_caddy_missing_or_current_is_a_directory() -> None:
    host = replace(
        empty_host(),
        commands=MappingProxyType({"caddy": None, "systemctl": "/bin/systemctl"}),
        links=MappingProxyType({"/opt/choiros/current": LinkState("dir"), "/opt/choiros/previous": None}),
    )
    p = plan(desired(), host)
    assert not p.actions
    assert any("caddy is not installed" in b for b in p.blockers)
    assert any("real dir" in b for b in p.blockers)


def test_a_backend_user_missing_on_the_host_blocks_the_plan() -> None:
    with_user = replace(desired(), backend=replace(desired().backend, user="svc"))
    missing = replace(empty_host(), users=MappingProxyType({"svc": None}))
    p = plan(with_user, missing)
    assert not p.actions and len(p.blockers) == 1
    assert "backend.user 'svc' does not exist on the host" in p.blockers[0]
    assert "useradd --system --user-group" in p.blockers[0]
    no_group = replace(
        empty_host(), users=MappingProxyType({"svc": UserState(998, has_group=False, gid=997)})
    )
    assert "groupadd --system svc" in plan(with_user, no_group).blockers[0]
    present = replace(empty_host(), users=MappingProxyType({"svc": UserState(998, has_group=True, gid=997)}))
    assert plan(with_user, present).blockers == () and plan(with_user, present).actions


def test_the_backend_user_is_asked_about_and_parsed_from_the_observation() -> None:
    with_user = replace(desired(), backend=replace(desired().backend, user="svc"))
    assert request_for(with_user)["users"] == ["svc"]
    assert request_for(desired())["users"] == []
    raw = {"host": {"hostname": "h"}, "files": {}, "links": {}, "releases": {}, "units": {}}
    assert parse({**raw, "users": {"svc": None}}).users == {"svc": None}
    assert parse({**raw, "users": {"svc": {"uid": 998, "gid": 997, "group": True}}}).users == {
        "svc": UserState(998, True, 997)
    }


def test_plan_carries_the_observation_fingerprint() -> None:
    assert plan(desired(), empty_host()).fingerprint == "fp"


# --- the property ---------------------------------------------------------------------------

versions = st.sampled_from(["1.0.0", "1.1.0", "2.0.0"])


@st.composite
def hosts(draw: st.DrawFn) -> Observed:
    """Hosts in arbitrary states: partial deploys, drift, stopped units, stale processes."""
    start = draw(st.sampled_from(["empty", "deployed", "deployed-dev", "deployed-bg", "deployed-bg-twice"]))
    if start == "empty":
        host = empty_host(caddy_active=draw(st.booleans()))
    elif start.startswith("deployed-bg"):
        host = deployed(desired(draw(versions), strategy="blue-green"))
        if start == "deployed-bg-twice":
            _, host = converge(
                desired(draw(versions), strategy="blue-green", idle=draw(st.sampled_from(["warm", "stop"]))),
                host,
            )
    else:
        base = desired(draw(versions), mode="dev-server" if start == "deployed-dev" else "static")
        host = deployed(base)
    releases = dict(host.releases)
    for v in draw(st.lists(versions, max_size=3)):
        releases[v] = ReleaseState(v)
    files = dict(host.files)
    if draw(st.booleans()):
        files[FRAGMENT] = FileState("file", draw(st.sampled_from([":80 {\n}\n", "junk"])), "j", 0o644)
    if draw(st.booleans()):
        files["/etc/caddy/Caddyfile"] = FileState(
            "file", draw(st.sampled_from(["other.example {\n}\n", "# junk\n"])), "j", 0o644
        )
    if draw(st.booleans()):
        files["/etc/choiros/backend.env"] = FileState(
            "file",
            "# Managed by reconciler (choiros): edited\nX=1\n",
            "e",
            draw(st.sampled_from([0o640, 0o644])),
        )
    units = dict(host.units)
    if draw(st.booleans()) and units[BACKEND].is_active:
        units[BACKEND] = replace(
            units[BACKEND], active=draw(st.sampled_from(["failed", "inactive"])), main_pid=0, cwd=None
        )
    if draw(st.booleans()):
        units[BACKEND] = replace(units[BACKEND], need_daemon_reload=units[BACKEND].exists)
    caddy = draw(
        st.sampled_from(
            [
                host.caddy,  # Caddy runs what was written
                replace(host.caddy, marks=MappingProxyType({})),  # a configuration without the app
                replace(host.caddy, marks=MappingProxyType({"choiros": "stale"})),  # an older fragment
            ]
        )
    )
    if draw(st.booleans()) and units[CADDY_UNIT].is_active:
        units[CADDY_UNIT] = replace(units[CADDY_UNIT], active="inactive")
        caddy = CaddyState()
    return replace(
        host,
        releases=MappingProxyType(releases),
        files=MappingProxyType(files),
        units=MappingProxyType(units),
        caddy=caddy,
    )


@st.composite
def desired_states(draw: st.DrawFn) -> DesiredState:
    strategy = draw(st.sampled_from(["restart", "symlink-swap", "blue-green"]))
    image = draw(st.booleans())
    restore = strategy != "blue-green" and draw(st.booleans())
    return desired(
        draw(versions),
        data=draw(
            st.sampled_from(
                [
                    "",
                    f"data: {{sqlite: /var/lib/choiros/c.db, restore_on_rollback: {str(restore).lower()}}}\n",
                ]
            )
        ),
        image=image,
        strategy=strategy,
        mode="static"
        if strategy == "blue-green" or image
        else draw(st.sampled_from(["static", "dev-server"])),
        idle=draw(st.sampled_from(["warm", "stop"])),
        keep=draw(st.integers(1, 3)),
        env=draw(
            st.dictionaries(
                st.sampled_from(["A", "B", "DATABASE_PATH"]),
                st.sampled_from(["1", "x y", "$HOME", 'q"uote']),
                max_size=3,
            )
        ),
        port=draw(st.sampled_from([8080, 8081])),
    )


def _clashes(d: DesiredState, host: Observed) -> bool:
    """The desired ports overlap the ports running units listen on: refused, and that is all."""
    blockers = plan(d, host).blockers
    assert all("would listen on port" in b for b in blockers), blockers
    return bool(blockers)


@settings(max_examples=300, deadline=None)
@given(hosts(), desired_states())
def test_one_plan_converges_and_the_next_is_empty(host: Observed, d: DesiredState) -> None:
    if _clashes(d, host):
        return
    p, after = converge(d, host)
    phases = [a.phase for a in p.actions]
    assert phases == sorted(phases)
    assert_runs_desired(d, after)
    again = plan(d, after)
    assert again.actions == (), [a.summary() for a in again.actions]


@settings(max_examples=100, deadline=None)
@given(hosts(), desired_states(), desired_states())
def test_any_sequence_of_desired_states_converges(
    host: Observed, first: DesiredState, second: DesiredState
) -> None:
    if _clashes(first, host):
        return
    _, host = converge(first, host)
    assert_runs_desired(first, host)
    if _clashes(second, host):
        return
    _, host = converge(second, host)
    assert_runs_desired(second, host)
    assert not plan(second, host).changed


@settings(max_examples=100, deadline=None)
@given(hosts(), desired_states())
def test_unit_started_only_after_its_file_is_loaded(host: Observed, d: DesiredState) -> None:
    """The model asserts daemon-reload before start; a plan violating it raises."""
    converge(d, host)


def test_caddy_is_reloaded_only_after_validation() -> None:
    p = plan(desired(), empty_host())
    kinds = [type(a) for a in p.actions]
    assert kinds.index(WriteCaddyfile) < kinds.index(LoadCaddy)


def test_write_file_for_env_is_secret() -> None:
    p = plan(desired(env={"TOKEN": "abc"}), empty_host())
    env_writes = [a for a in p.actions if isinstance(a, WriteFile) and a.path.endswith(".env")]
    assert env_writes and all(a.secret and a.mode == 0o640 for a in env_writes)


@pytest.mark.parametrize("verb", ["enable", "start"])
def test_enable_and_start_target_the_backend(verb: str) -> None:
    p = plan(desired(), empty_host())
    assert any(isinstance(a, Systemctl) and a.verb == verb and a.unit == BACKEND for a in p.actions)


# --- blue-green -----------------------------------------------------------------------------


def bg(version: str = "1.0.0", idle: str = "warm") -> DesiredState:
    return desired(version, strategy="blue-green", idle=idle)


def test_blue_green_first_deploy_goes_to_blue_and_routes_caddy_there() -> None:
    p, after = converge(bg(), empty_host())
    order = labels(p)
    assert ("symlink", "/opt/choiros/blue -> releases/1.0.0") in order
    assert order.index(("health-check", "http://127.0.0.1:8081/health")) < order.index(("reload", CADDY_UNIT))
    assert caddyconfig.fragment_upstreams(after.content(FRAGMENT)) == [8081], "Caddy goes to blue"
    assert not plan(bg(), after).changed


def test_blue_green_bump_starts_idle_colour_gates_it_then_switches() -> None:
    host = deployed(bg())
    p, after = converge(bg("2.0.0"), host)
    assert labels(p) == [
        ("upload", "/opt/choiros/releases/2.0.0"),
        ("write", f"{UNIT_DIR}/{GREEN}"),
        ("write", "/etc/choiros/backend-green.env"),
        ("daemon-reload", "systemd"),
        ("symlink", "/opt/choiros/green -> releases/2.0.0"),
        ("enable", GREEN),
        ("start", GREEN),
        ("health-check", "http://127.0.0.1:8082/health"),
        ("validate+write", FRAGMENT),
        ("reload", CADDY_UNIT),
        ("symlink", "/opt/choiros/previous -> releases/1.0.0"),
        ("symlink", "/opt/choiros/current -> releases/2.0.0"),
        ("record-good", "2.0.0"),
    ]
    assert not any(isinstance(a, Systemctl) and a.unit == BLUE for a in p.actions), "the live colour"
    assert after.unit(BLUE).is_active and after.unit(BLUE).cwd == "/opt/choiros/releases/1.0.0"
    assert not plan(bg("2.0.0"), after).changed


def test_blue_green_rollback_is_only_a_caddy_switch() -> None:
    host = deployed(bg())
    _, host = converge(bg("2.0.0"), host)
    p, after = converge(bg("1.0.0"), host)
    assert [type(a).__name__ for a in p.actions] == [
        "WriteCaddyfile",
        "LoadCaddy",
        "SetSymlink",
        "SetSymlink",
        "RecordGood",
    ]
    assert not any(isinstance(a, Systemctl) for a in p.actions)
    assert caddyconfig.fragment_upstreams(after.content(FRAGMENT)) == [8081], "Caddy goes to blue"


def test_blue_green_after_a_reboot_gates_the_colour_it_switches_away_from() -> None:
    """A reboot starts both colours again, neither with a gate record. A deploy then gates the
    idle colour it starts and, after the switch, the one that served until then (now idle):
    one run converges. It used to leave that colour ungated, and the run ended with exit 1,
    "the host still differs after applying" (found by benchmarks/chaos)."""
    model = ModelHost(empty_host())  # one host: its processes' invocations never repeat
    for version in ("1.0.0", "2.0.0"):  # green serves 2.0.0, blue warm on 1.0.0
        model.apply_plan(plan(bg(version), model.snapshot()))
    model.disturb("reboot")
    host = model.snapshot()
    assert not host.gated(BLUE) and not host.gated(GREEN)
    p = plan(bg("3.0.0"), host)
    after = model.apply_plan(p)
    order = labels(p)
    assert order.index(("health-check", "http://127.0.0.1:8081/health")) < order.index(("reload", CADDY_UNIT))
    assert order.index(("reload", CADDY_UNIT)) < order.index(("health-check", "http://127.0.0.1:8082/health"))
    assert not any(isinstance(a, Systemctl) and a.unit == GREEN for a in p.actions), "never restarted"
    assert after.gated(BLUE) and after.gated(GREEN)
    assert not plan(bg("3.0.0"), after).changed


def test_blue_green_idle_stop_stops_the_old_colour_after_the_switch() -> None:
    host = deployed(bg(idle="stop"))
    p, after = converge(bg("2.0.0", idle="stop"), host)
    order = labels(p)
    assert order.index(("reload", CADDY_UNIT)) < order.index(("stop", BLUE))
    assert not after.unit(BLUE).is_active
    # Rolling back then starts blue (already holding 1.0.0): no upload, health-gated, then switch.
    p2, after2 = converge(bg("1.0.0", idle="stop"), after)
    order2 = labels(p2)
    assert not any(a == "upload" for a, _ in order2)
    assert (
        order2.index(("start", BLUE)) < order2.index(("reload", CADDY_UNIT)) < order2.index(("stop", GREEN))
    )
    assert not plan(bg("1.0.0", idle="stop"), after2).changed


def test_blue_green_never_keeps_a_quarantined_release_warm() -> None:
    host = deployed(bg())
    _, host = converge(bg("2.0.0"), host)  # green runs 2.0.0, blue warm on 1.0.0
    _, host = converge(bg("1.0.0"), host)  # back to blue; green warm on 2.0.0
    failed = identity.fingerprint(bg("2.0.0"))
    entry = QuarantineEntry("2.0.0", "health check failed", failed)
    host = replace(host, quarantine=MappingProxyType({failed: entry}))
    p = plan(bg("1.0.0"), host)
    assert labels(p) == [("stop", GREEN)]
    assert "a configuration that failed" in p.actions[0].reason


def test_switching_to_blue_green_retires_the_single_unit_after_the_switch() -> None:
    p, after = converge(bg(), deployed())
    order = labels(p)
    assert order.index(("reload", CADDY_UNIT)) < order.index(("stop", BACKEND))
    assert not plan(bg(), after).changed
    p2, after2 = converge(desired(), after)
    order2 = labels(p2)
    assert order2.index(("reload", CADDY_UNIT)) < order2.index(("stop", BLUE))
    assert not plan(desired(), after2).changed


def test_blue_green_requires_port_placeholder() -> None:
    text = """
app: choiros
target: local
release: {version: "1", source: x}
strategy: blue-green
backend: {command: bin/backend --port 8080, port: 8080}
"""
    with pytest.raises(InvalidDesiredState) as exc:
        load_bytes(text.encode(), "d.yaml", base_dir=Path("/"))
    assert "{port}" in str(exc.value) and "backend.command" in str(exc.value)


# --- pruning and checksums ------------------------------------------------------------------


def test_pruning_keeps_release_keep_and_never_current_or_previous() -> None:
    host = deployed(desired("1.0.0", keep=2))
    _, host = converge(desired("2.0.0", keep=2), host)
    p, host = converge(desired("3.0.0", keep=2), host)
    assert ("prune", "/opt/choiros/releases/1.0.0") in labels(p)
    assert sorted(host.releases) == ["2.0.0", "3.0.0"]
    assert [a for a, _ in labels(p)][-2:] == ["prune", "record-good"], "pruning comes after the switch"


def test_keep_one_still_keeps_previous_for_rollback() -> None:
    host = deployed(desired("1.0.0", keep=1))
    p, host = converge(desired("2.0.0", keep=1), host)
    assert not any(a == "prune" for a, _ in labels(p))
    assert sorted(host.releases) == ["1.0.0", "2.0.0"]


def test_release_on_host_with_other_checksum_is_a_blocker() -> None:
    host = deployed()
    releases = dict(host.releases)
    releases["1.0.0"] = ReleaseState("1.0.0", "a" * 64)
    d = replace(desired(), release=replace(desired().release, sha256="b" * 64))
    p = plan(d, replace(host, releases=MappingProxyType(releases)))
    assert not p.actions and "must not change" in p.blockers[0]


def test_secret_names_are_marked_and_values_absent() -> None:
    from reconciler.spec.model import EnvVar

    d = desired()
    d = replace(d, env=(*d.env, EnvVar("API_TOKEN", "tok-123", secret=True)))
    p = plan(d, deployed())
    reasons = " ".join(a.reason for a in p.actions)
    assert "API_TOKEN (secret)" in reasons and "tok-123" not in repr(p.summaries())


# --- container images -------------------------------------------------------------------------


def test_image_release_loads_the_image_and_runs_a_podman_unit() -> None:
    p, after = converge(desired(image=True), empty_host())
    assert labels(p)[0] == ("load-image", "localhost/choiros:1.0.0")
    unit = after.content(f"{UNIT_DIR}/{BACKEND}")
    assert unit is not None and "/usr/bin/podman run" in unit and "localhost/choiros:1.0.0" in unit
    assert "--network=host" in unit and "--env=RECONCILER_RELEASE=1.0.0" in unit
    assert not plan(desired(image=True), after).changed


def test_image_rollback_by_revert_reloads_nothing() -> None:
    host = deployed(desired(image=True))
    _, host = converge(desired("2.0.0", image=True), host)
    p, after = converge(desired("1.0.0", image=True), host)
    assert not any(a == "load-image" for a, _ in labels(p)), "the old image is still on the host"
    assert ("restart", BACKEND) in labels(p)
    assert after.unit(BACKEND).environ.get(units.RELEASE_VAR) == "1.0.0"


def test_a_missing_image_is_loaded_again_even_if_the_release_folder_exists() -> None:
    host = deployed(desired(image=True))
    host = replace(host, images=frozenset())
    p = plan(desired(image=True), host)
    assert labels(p)[0] == ("load-image", "localhost/choiros:1.0.0")
    assert "image localhost/choiros:1.0.0 is not on the host" in p.actions[0].reason


def test_blue_green_with_images_keeps_the_idle_colour_on_its_own_image() -> None:
    d1 = desired("1.0.0", strategy="blue-green", image=True)
    host = deployed(d1)
    p, host = converge(desired("2.0.0", strategy="blue-green", image=True), host)
    assert ("restart", BLUE) not in labels(p) and ("write", f"{UNIT_DIR}/{BLUE}") not in labels(p)
    back, host = converge(d1, host)
    assert not any(isinstance(a, Systemctl) for a in back.actions), labels(back)
    assert not plan(d1, host).changed


def test_pruning_an_image_release_removes_its_image() -> None:
    host = deployed(desired("1.0.0", keep=2, image=True))
    _, host = converge(desired("2.0.0", keep=2, image=True), host)
    p, host = converge(desired("3.0.0", keep=2, image=True), host)
    pruned = [a for a in p.actions if a.summary()["action"] == "prune"]
    assert [getattr(a, "image", None) for a in pruned] == ["localhost/choiros:1.0.0"]
    assert "localhost/choiros:1.0.0" not in host.images


# --- the database -------------------------------------------------------------------------------

DATA = "data: {sqlite: /var/lib/choiros/choiros.db, restore_on_rollback: true}\n"


def test_database_is_snapshotted_before_the_backend_leaves_a_release() -> None:
    host = deployed(desired(data=DATA))
    p, host = converge(desired("2.0.0", data=DATA), host)
    order = labels(p)
    snap = ("snapshot", "/var/lib/choiros/choiros.db -> /var/lib/reconciler/choiros/snapshots/1.0.0.sqlite")
    assert snap in order and order.index(snap) < order.index(("restart", BACKEND))
    assert not any(a == "restore" for a, _ in order), "going forward restores nothing"
    assert "1.0.0" in host.snapshots


def test_moving_back_restores_the_snapshot_with_the_backend_stopped() -> None:
    host = deployed(desired(data=DATA))
    _, host = converge(desired("2.0.0", data=DATA), host)
    p, host = converge(desired("1.0.0", data=DATA), host)
    order = [a for a, _ in labels(p)]
    assert order.index("snapshot") < order.index("restore") < order.index("restart")
    restore = next(a for a in p.actions if a.summary()["action"] == "restore")
    assert restore.target.startswith("/var/lib/reconciler/choiros/snapshots/1.0.0.sqlite")
    assert not plan(desired("1.0.0", data=DATA), host).changed


def test_without_restore_a_revert_only_snapshots() -> None:
    data = "data: {sqlite: /var/lib/choiros/choiros.db}\n"
    host = deployed(desired(data=data))
    _, host = converge(desired("2.0.0", data=data), host)
    p = plan(desired("1.0.0", data=data), host)
    assert [a for a, _ in labels(p)].count("restore") == 0


def test_blue_green_snapshots_before_the_new_colour_starts() -> None:
    data = "data: {sqlite: /var/lib/choiros/choiros.db}\n"
    host = deployed(desired(strategy="blue-green", data=data))
    p = plan(desired("2.0.0", strategy="blue-green", data=data), host)
    order = [a for a, _ in labels(p)]
    assert order.index("snapshot") < order.index("start")


def test_blue_green_refuses_restore_on_rollback() -> None:
    with pytest.raises(InvalidDesiredState, match="share the database"):
        desired(strategy="blue-green", data=DATA)


def test_install_section_change_reenables_the_unit() -> None:
    host = _edit_unit(deployed(), "WantedBy=multi-user.target", "WantedBy=default.target")
    p, after = converge(desired(), host)
    assert labels(p) == [
        ("write", f"{UNIT_DIR}/{BACKEND}"),
        ("daemon-reload", "systemd"),
        ("reenable", BACKEND),
    ]
    assert "[Install]" in p.actions[2].reason
    assert not plan(desired(), after).changed


# --- several apps, one Caddy; adopting a host set up by hand -------------------------------------

HAND_CADDYFILE = """# written by hand
other.example {
\trespond "other site"
}

:80 {
\treverse_proxy /api/* localhost:8080
\troot * /srv/choiros/frontend
\tfile_server
}
"""


def _with_files(host: Observed, **files: str) -> Observed:
    have = dict(host.files)
    for path, text in files.items():
        have[path.replace("__", "/")] = FileState(
            "file", text, hashlib.sha256(text.encode()).hexdigest(), 0o644
        )
    return replace(host, files=MappingProxyType(have))


def test_another_apps_site_or_port_is_refused_naming_it() -> None:
    blog = "/etc/caddy/apps/blog.caddy"
    text = "# Managed by reconciler (blog): edits here are reverted on the next run.\n# claims: site=:80 ports=9000,8080\n:80 {\n}\n"
    host = replace(empty_host(), fragments=MappingProxyType({blog: text}))
    p = plan(desired(), host)
    assert not p.actions
    assert any("site :80 is already served by app 'blog'" in b for b in p.blockers), p.blockers
    assert any("port 8080 is already used by app 'blog'" in b for b in p.blockers), p.blockers
    other = desired()
    other = replace(
        other, proxy=replace(other.proxy, site="choir.example"), backend=replace(other.backend, port=8090)
    )
    assert plan(other, host).changed and not plan(other, host).blockers


def test_a_main_caddyfile_serving_the_apps_address_needs_adopt_and_keeps_the_other_site() -> None:
    host = replace(empty_host(caddyfile=HAND_CADDYFILE))
    refused = plan(desired(), host)
    assert not refused.actions and any("--adopt" in b and "line 6" in b for b in refused.blockers), (
        refused.blockers
    )
    p = plan(desired(), host, adopt=True)
    main = next(a for a in p.actions if isinstance(a, WriteCaddyfile) and a.path == "/etc/caddy/Caddyfile")
    assert main.backup and "/etc/caddy/Caddyfile" in p.adopting
    assert main.content is not None and "other.example" in main.content and ":80 {" not in main.content
    assert "import /etc/caddy/apps/*.caddy" in main.content


def test_a_main_caddyfile_with_other_sites_only_gets_the_import_line_without_a_flag() -> None:
    text = "other.example {\n\trespond hi\n}\n"
    p = plan(desired(), empty_host(caddyfile=text))
    main = next(a for a in p.actions if isinstance(a, WriteCaddyfile) and a.path == "/etc/caddy/Caddyfile")
    assert main.content == text + "\nimport /etc/caddy/apps/*.caddy\n" and not main.backup and not p.adopting


def test_a_unit_written_by_hand_needs_adopt_and_is_backed_up() -> None:
    hand = "[Service]\nExecStart=/srv/choiros/bin/backend\n"
    host = _with_files(empty_host(), **{f"{UNIT_DIR}/{BACKEND}".replace("/", "__"): hand})
    assert any(BACKEND in b and "--adopt" in b for b in plan(desired(), host).blockers)
    p = plan(desired(), host, adopt=True)
    write = next(a for a in p.actions if isinstance(a, WriteFile) and a.path.endswith(BACKEND))
    assert write.backup and "written by someone else" in write.reason
    assert f"{UNIT_DIR}/{BACKEND}" in p.adopting


def test_the_whole_caddyfile_an_older_reconciler_wrote_becomes_a_fragment_without_a_flag() -> None:
    old = "# Managed by reconciler (choiros): edits here are reverted on the next run.\n:80 {\n}\n"
    p = plan(desired(), empty_host(caddyfile=old))
    assert not p.blockers and not p.adopting
    main = next(a for a in p.actions if isinstance(a, WriteCaddyfile) and a.path == "/etc/caddy/Caddyfile")
    assert (
        main.content
        == "# Managed by reconciler: every app's site is a fragment in /etc/caddy/apps/.\nimport /etc/caddy/apps/*.caddy\n"
    )


# --- release tasks and shared paths ------------------------------------------------------------

TASKS = "  tasks: {before_switch: [bin/migrate --up], after_switch: [bin/warm]}"
SQLITE = "data: {sqlite: /var/lib/choiros/choiros.db}\n"


def test_migrations_run_after_the_snapshot_before_the_switch_and_only_once() -> None:
    host = deployed(desired("1.0.0", data=SQLITE))
    p, after = converge(desired("2.0.0", data=SQLITE, tasks=TASKS), host)
    order = [a for a, _ in labels(p)]
    assert order.index("snapshot") < order.index("task") < order.index("symlink") < order.index("restart")
    tasks = [a for a in p.actions if isinstance(a, RunTask)]
    assert [(t.when, t.argv) for t in tasks] == [
        ("before_switch", ("/opt/choiros/releases/2.0.0/bin/migrate", "--up")),
        ("after_switch", ("/opt/choiros/releases/2.0.0/bin/warm",)),
    ]
    assert order.index("reload") < len(order) - 1 - order[::-1].index("task"), "after_switch after the switch"
    before = tasks[0]
    assert (
        before.snapshot == "/var/lib/reconciler/choiros/snapshots/1.0.0.sqlite"
        and before.on_failure == "rollback"
    )
    assert tasks[1].on_failure == "report"
    assert not plan(desired("2.0.0", data=SQLITE, tasks=TASKS), after).changed, "tasks ran once"
    again = plan(desired("2.0.0", data=SQLITE, tasks=TASKS, env={"A": "changed"}), after)
    assert [a.when for a in again.actions if isinstance(a, RunTask)] == ["before_switch", "after_switch"]


def test_a_migration_without_a_version_change_still_snapshots_first() -> None:
    host = deployed(desired("1.0.0", data=SQLITE))
    p = plan(desired("1.0.0", data=SQLITE, tasks=TASKS), host)
    order = [a for a, _ in labels(p)]
    assert order.index("snapshot") < order.index("task")


def test_shared_paths_are_linked_once() -> None:
    d = desired("1.0.0", data="shared: [uploads, cache/img]\n")
    p, after = converge(d, empty_host())
    link = next(a for a in p.actions if isinstance(a, LinkShared))
    assert link.paths == ("uploads", "cache/img") and link.shared == "/opt/choiros/shared"
    order = [a for a, _ in labels(p)]
    assert order.index("link-shared") < order.index("start")
    assert not plan(d, after).changed


def test_stop_timeout_and_signal_reach_the_unit() -> None:
    d = desired()
    d = replace(d, backend=replace(d.backend, stop_timeout=90.0, stop_signal="SIGINT"))
    text = SingleSlot(d).texts()[BACKEND]
    assert "TimeoutStopSec=90s" in text and "KillSignal=SIGINT" in text
    assert "KillSignal" not in SingleSlot(desired()).texts()[BACKEND], "the default stays as it was"
