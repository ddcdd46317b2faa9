"""A model of a host: applies typed actions to an Observed snapshot the way the agent, systemd
and Caddy would, so planner properties can be checked without I/O.

It is meant to be at least as strict as the real host, never kinder:

- processes have invocations and inherit markers; a start that fails leaves the unit failed;
  whether a process is healthy is decided by the test from its release, its environment, its
  command and its container runtime, so any input can make it fail (`tick` lets crash loops
  show);
- Caddy serves what it last loaded, whatever is on disk since, and the routed units are read
  from the upstream ports of what it loaded, never from a marker: `systemctl start` of a
  running Caddy loads nothing, a reload that fails (injected) puts this apply's Caddy files
  back and loads them again, as the agent does;
- someone else can reload or restart Caddy, stop it, reboot the host or hand-edit the app's
  fragment, between runs or before any step of one (`disturb`);
- the agent's guards, refusals (Caddy pointed at an ungated process, a good state with an
  ungated process) and its rollback on failure are modelled, and a failure can be injected
  into any forward or rollback step; the agent can be killed before any step
  (`run(plan, kill_at=N)`), and the client can go away (`cancel_at`).

A plan that runs into a refusal is a planner bug, which `refusals` lets a test see.
"""

from __future__ import annotations

import hashlib
import itertools
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from reconciler.agent.caddyconfig import fragment_digest, fragment_upstreams, runs
from reconciler.observe.snapshot import (
    CADDY_UNIT,
    CaddyState,
    FileState,
    GateRecord,
    GoodState,
    LinkState,
    Observed,
    QuarantineEntry,
    RecordedFile,
    ReleaseState,
    UnitState,
    hold_of,
)
from reconciler.plan.actions import (
    Action,
    CheckHealth,
    DaemonReload,
    LinkShared,
    LoadCaddy,
    LoadImage,
    Plan,
    PruneFrontend,
    PruneRelease,
    PullFrontend,
    RecordGood,
    RecordHold,
    RecordMaintenance,
    RecordQuarantine,
    RemoveFile,
    RestoreDatabase,
    RunTask,
    SetSymlink,
    SnapshotDatabase,
    Systemctl,
    UploadRelease,
    WriteCaddyfile,
    WriteFile,
)
from reconciler.render import caddyfile, envfile, units

APP = "choiros"
MAIN = "/etc/caddy/Caddyfile"
IMPORT = "import /etc/caddy/apps/*.caddy"
FRAGMENT = "/etc/caddy/apps/choiros.caddy"
MAINTENANCE_FLAG = "/etc/caddy/apps/choiros.maintenance"
# Which of the app's units listens on a port: the layout the tests' desired states use.
PORTS = {
    8080: "choiros-backend.service",
    8081: "choiros-backend-blue.service",
    8082: "choiros-backend-green.service",
    3000: "choiros-frontend.service",
}


def file_state(content: str, mode: int = 0o644) -> FileState:
    return FileState("file", content, hashlib.sha256(content.encode()).hexdigest(), mode)


def upstream_ports(text: str | None) -> set[int]:
    """The ports a Caddy configuration sends traffic to, read from its text; a test on a real
    host (tests/test_caddy_truth.py) holds this to what Caddy's adapted JSON says."""
    return set(fragment_upstreams(text))


def _serving(observed: Observed) -> str | None:
    """What Caddy serves, as far as an observation tells: the fragment on disk when Caddy runs
    its mark, else a configuration routing to the upstreams it reported."""
    if not observed.caddy.answered:
        return None
    disk = observed.content(FRAGMENT)
    mark = observed.caddy.marks.get(APP)
    main = observed.content(MAIN) or ""
    if disk is not None and mark == fragment_digest(disk) and IMPORT in main:
        return main + disk
    lines = [f"\treverse_proxy 127.0.0.1:{p}" for p in sorted(observed.caddy.upstreams)]
    if mark is not None:
        lines.insert(0, f"\tvars reconciler_fragment_{APP} {mark}")
    return ":80 {\n" + "".join(f"{ln}\n" for ln in lines) + "}\n" if lines else None


class Failure(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Process:
    """What a test's health rule looks at: the unit's process and what it was started with."""

    unit: str
    release: str | None
    env: Mapping[str, str]
    command: str = ""  # ExecStart as written in the unit
    runtime: str | None = None  # podman | docker for a container, None for a folder


Healthy = Callable[[Process], bool]


class Killed(Exception):
    pass


# What someone else does to the host (`disturb`): none of it takes the reconciler's locks,
# except a reboot, which also kills whatever runs.
DISTURBANCES = ("caddy_reload", "caddy_restart", "caddy_stop", "reboot", "hand_edit")


class ModelHost:
    def __init__(
        self,
        observed: Observed,
        units_dir: str = "/etc/systemd/system",
        *,
        healthy: Healthy = lambda p: True,
        crashy: Healthy = lambda p: False,
    ) -> None:
        self.files: dict[str, FileState | None] = dict(observed.files)
        self.links: dict[str, LinkState | None] = dict(observed.links)
        self.releases: dict[str, ReleaseState] = dict(observed.releases)
        self.units: dict[str, UnitState] = dict(observed.units)
        # What Caddy serves for the app: the fragment as it last loaded it (None: nothing).
        self.caddy_serving: str | None = _serving(observed)
        self.quarantine: dict[str, QuarantineEntry] = dict(observed.quarantine)
        self.images = set(observed.images)
        self.frontends: dict[str, float] = dict(observed.frontends)
        self.snapshots = set(observed.snapshots)
        self.gates: dict[str, GateRecord] = dict(observed.gates)
        self.tasks: dict[str, dict[str, int]] = {k: dict(v) for k, v in observed.tasks.items()}
        self.maintenance = observed.maintenance
        self.hold = observed.hold
        self.good: list[GoodState] = list(observed.good)
        self.base = observed
        self.units_dir = units_dir
        self.healthy = healthy
        self.crashy = crashy
        self.runtime: str | None = observed.runtime
        self.proc: dict[str, Process] = {}  # unit -> what its running process was started with
        self.invocations = itertools.count(1)
        self.refusals: list[str] = []  # the agent refused something the planner asked for
        self.caddy_violations: list[str] = []  # Caddy was pointed at an ungated process
        self._steps = 0
        self._kill_at: int | None = None
        self._fail_at: int | None = None
        self._fail_back_at: int | None = None
        self._disturb: tuple[str, int] | None = None
        self._taken: set[str] = set()
        self._caddy_backups: dict[str, FileState | None] = {}
        self._started: set[str] = set()
        self._by_someone_else = False
        self._disturbed = False  # someone else acted during the current run

    # -- helpers ---------------------------------------------------------------------------

    def resolve(self, path: str) -> str:
        """Resolve symlinks among the model's links (one level is all the layout uses)."""
        for link_path, link in self.links.items():
            if (
                link
                and link.kind == "symlink"
                and link.target
                and (path == link_path or path.startswith(link_path + "/"))
            ):
                target = posixpath.normpath(posixpath.join(posixpath.dirname(link_path), link.target))
                return target + path[len(link_path) :]
        return path

    def unit_file(self, name: str) -> str | None:
        f = self.files.get(f"{self.units_dir}/{name}")
        return f.content if f else None

    def disk_fragment(self) -> str | None:
        f = self.files.get(FRAGMENT)
        return f.content if f else None

    def disk_config(self) -> str:
        """What Caddy would load: the main Caddyfile, and the fragment when it imports it."""
        main = self.files.get(MAIN)
        text = (main.content or "") if main else ""
        return text + (self.disk_fragment() or "") if IMPORT in text else text

    def process(self, name: str) -> Process:
        unit = self.units.get(name) or UnitState(name)
        held = self.proc.get(name)
        release = unit.environ.get(units.RELEASE_VAR)
        if held is None:
            return Process(name, release, {})
        return replace(held, release=release)

    def unit_state(self, name: str) -> UnitState:
        return self.units.get(name) or UnitState(name)

    def gated(self, name: str) -> bool:
        unit = self.units.get(name) or UnitState(name)
        record = self.gates.get(name)
        return unit.is_active and record is not None and record.invocation == unit.invocation

    def caddy_active(self) -> bool:
        return (self.units.get(CADDY_UNIT) or UnitState(CADDY_UNIT)).is_active

    def routed_units(self) -> list[str]:
        """The app's units Caddy really sends traffic to: the upstream ports of what it loaded."""
        if not self.caddy_active():
            return []
        return sorted(PORTS[p] for p in upstream_ports(self.caddy_serving) if p in PORTS)

    def answers(self) -> str:
        """What a visitor gets: maintenance (503), app, or down."""
        text = self.caddy_serving if self.caddy_active() else None
        if text is None:
            return "down"
        if "@maintenance" in text and self.files.get(MAINTENANCE_FLAG) is not None:
            return "maintenance"
        routed = self.routed_units()
        return "app" if routed and all(self.unit_state(u).is_active for u in routed) else "down"

    def _check_caddy(self) -> None:
        if self._by_someone_else:
            return  # what another app or an admin loads is not the reconciler's doing
        for unit in self.routed_units():
            if not self.gated(unit):
                self.caddy_violations.append(f"Caddy routes to {unit}, which has no gate record")

    # -- Caddy -----------------------------------------------------------------------------

    def _caddy_load_disk(self) -> None:
        self.caddy_serving = self.disk_config()
        self._check_caddy()

    def _caddy_start(self) -> None:
        """`systemctl start caddy`: loads the files on disk, unless Caddy runs already."""
        if self.caddy_active():
            return
        unit = self.units.get(CADDY_UNIT) or UnitState(CADDY_UNIT)
        self.units[CADDY_UNIT] = replace(unit, active="active", sub="running", main_pid=99)
        self._caddy_load_disk()

    def _caddy_stop(self) -> None:
        unit = self.units.get(CADDY_UNIT) or UnitState(CADDY_UNIT)
        self.units[CADDY_UNIT] = replace(unit, active="inactive", sub="dead", main_pid=0)
        self.caddy_serving = None

    def disturb(self, kind: str) -> None:
        """Someone else acts on the host."""
        self._by_someone_else = True
        try:
            self._disturb_once(kind)
        finally:
            self._by_someone_else = False

    def _disturb_once(self, kind: str) -> None:
        if kind == "caddy_reload":  # another app's deploy, or an admin's `systemctl reload caddy`
            if self.caddy_active():
                self._caddy_load_disk()
        elif kind == "caddy_restart":  # a crash that systemd restarts, an upgrade, an admin
            self._caddy_stop()
            self._caddy_start()
        elif kind == "caddy_stop":
            self._caddy_stop()
        elif kind == "reboot":
            self.reboot()
        elif kind == "hand_edit":
            self.hand_edit()
        else:  # pragma: no cover
            raise AssertionError(kind)

    def hand_edit(self) -> None:
        """An admin points the app's fragment at the other colour and reloads Caddy: the
        comment lines stay as they were, only the upstream changes."""
        text = self.disk_fragment()
        ports = upstream_ports(text)
        if text is None or not ports & {8081, 8082}:
            return
        swap = {"8081": "8082", "8082": "8081"}
        self.files[FRAGMENT] = file_state(
            re.sub(r"(reverse_proxy 127\.0\.0\.1:)(808[12])", lambda m: m.group(1) + swap[m.group(2)], text)
        )
        self._disturb_once("caddy_reload")

    def reboot(self) -> None:
        """Every process ends; enabled units start again from the files on disk (new
        invocations, so no gate record matches them); Caddy loads what is on disk."""
        for name in list(self.units):
            if name != CADDY_UNIT:
                self.stop(name)
        self._caddy_stop()
        for name, unit in list(self.units.items()):
            self.units[name] = replace(unit, need_daemon_reload=False)
            if name != CADDY_UNIT and unit.is_enabled and self.unit_file(name) is not None:
                try:
                    self.start(name)
                except Failure:
                    self.units[name] = replace(self.units[name], active="failed", sub="failed")
        self._caddy_start()

    # -- processes -------------------------------------------------------------------------

    def start(self, name: str) -> None:
        text = self.unit_file(name)
        unit = self.units.get(name) or UnitState(name)
        if name == CADDY_UNIT:
            self._caddy_start()
            return
        assert text is not None, f"start of {name} without a unit file"
        assert not unit.need_daemon_reload, f"start of {name} before daemon-reload"
        parsed = units.parse(text)
        service = parsed.get("Service", [])
        values = dict(service)
        exec_start = values.get("ExecStart", "")
        runtime = (
            "podman"
            if exec_start.startswith(units.PODMAN)
            else "docker"
            if exec_start.startswith(units.DOCKER)
            else None
        )
        environ: dict[str, Any] = {}
        for key, value in service:
            if key == "Environment" and value.startswith("RECONCILER_"):
                k, _, v = value.partition("=")
                environ[k] = v
        env_values: dict[str, str] = {}
        env_path = values.get("EnvironmentFile")
        if env_path:
            env = self.files.get(env_path)
            if env is None:
                raise Failure("systemd", f"{name}: EnvironmentFile {env_path} is missing")
            env_values = envfile.parse(env.content or "")
            if envfile.CONFIG_VAR in env_values:
                environ[envfile.CONFIG_VAR] = env_values[envfile.CONFIG_VAR]
        release = environ.get(units.RELEASE_VAR)
        if runtime is not None:
            for word in exec_start.split():
                if word.startswith(f"--env={units.RELEASE_VAR}="):
                    release = word.split("=", 2)[2]
            if release is not None:  # a frontend of its own image names no release
                assert release in self.releases, f"{name} started with missing release {release}"
                assert self.releases[release].image in self.images, f"{name} started without its image"
                environ[units.RELEASE_VAR] = release
            cwd = None
        else:
            cwd = self.resolve(values.get("WorkingDirectory", "/"))
            assert posixpath.basename(cwd) in self.releases, f"{name} started in missing release {cwd}"
        self.proc[name] = Process(name, release, env_values, exec_start, runtime)
        self.units[name] = replace(
            unit,
            load="loaded",
            active="active",
            sub="running",
            main_pid=1000,
            invocation=f"inv-{next(self.invocations)}",
            restarts=0,
            cwd=cwd,
            environ=MappingProxyType(environ),
        )

    def stop(self, name: str) -> None:
        if name == CADDY_UNIT:
            self._caddy_stop()
            return
        unit = self.units.get(name) or UnitState(name)
        self.units[name] = replace(
            unit,
            active="inactive",
            sub="dead",
            main_pid=0,
            invocation="",
            restarts=0,
            cwd=None,
            environ=MappingProxyType({}),
        )
        self.proc.pop(name, None)

    def _fail_start(self, name: str) -> None:
        """systemd could not start it: the unit ends failed, no process runs."""
        self.stop(name)
        unit = self.units.get(name) or UnitState(name)
        self.units[name] = replace(unit, active="failed", sub="failed")

    def tick(self) -> None:
        """Time passes: a crashy process dies, and systemd is about to restart it."""
        for name, unit in list(self.units.items()):
            if name != CADDY_UNIT and unit.is_active and self.crashy(self.process(name)):
                self.units[name] = replace(
                    unit,
                    active="activating",
                    sub="auto-restart",
                    main_pid=0,
                    invocation=f"inv-{next(self.invocations)}",
                    restarts=unit.restarts + 1,
                    cwd=None,
                    environ=MappingProxyType({}),
                )

    # -- actions ---------------------------------------------------------------------------

    def apply(self, action: Action) -> None:  # noqa: C901 - one branch per action kind
        if isinstance(action, PullFrontend):
            if action.pull:
                self.images |= {action.image, f"{action.image}@{action.digest}" if action.digest else ""}
            assert action.image in self.images, f"frontend {action.image} copied without its image"
            if action.dest:
                self.frontends.setdefault(posixpath.basename(action.dest), float(len(self.frontends)))
        elif isinstance(action, PruneFrontend):
            name = posixpath.basename(action.path)
            served = [self.disk_fragment() or "", self.caddy_serving or ""]
            assert not any(f"/{name}/" in text for text in served), f"pruned {name}, which Caddy serves"
            self.frontends.pop(name, None)
        elif isinstance(action, LoadImage):
            self.images.add(action.image)
            if action.digest:
                self.images.add(f"{action.image}@{action.digest}")
            held = self.releases.get(action.version)
            self.releases[action.version] = ReleaseState(
                action.version,
                action.sha256,
                held.uploaded if held else f"t{len(self.releases):04d}",
                action.image,
            )
        elif isinstance(action, UploadRelease):
            assert action.version not in self.releases
            self.releases[action.version] = ReleaseState(
                action.version, action.sha256, f"t{len(self.releases):04d}"
            )
        elif isinstance(action, WriteFile):
            have = self.files.get(action.path)
            if have is not None and have.content == action.content and have.mode == action.mode:
                return
            self.files[action.path] = file_state(action.content, action.mode)
            name = posixpath.basename(action.path)
            if action.path.startswith(self.units_dir + "/"):
                unit = self.units.get(name) or UnitState(name)
                self.units[name] = replace(unit, need_daemon_reload=unit.exists)
        elif isinstance(action, RemoveFile):
            self.files[action.path] = None
            name = posixpath.basename(action.path)
            if name in self.units:
                self.units[name] = replace(self.units[name], need_daemon_reload=self.units[name].exists)
        elif isinstance(action, DaemonReload):
            clean = all(
                not (self.units.get(u) or UnitState(u)).need_daemon_reload for u in action.unless_clean
            )
            if action.unless_clean and clean:
                return
            for name, unit in list(self.units.items()):
                if name == CADDY_UNIT:
                    continue
                present = self.unit_file(name) is not None
                load = "loaded" if present else ("loaded" if unit.is_active else "not-found")
                self.units[name] = replace(unit, need_daemon_reload=False, load=load)
        elif isinstance(action, LinkShared):
            for path in action.paths:
                self.links[f"{action.release}/{path}"] = LinkState("symlink", f"{action.shared}/{path}", True)
        elif isinstance(action, RunTask):
            done = self.tasks.setdefault(action.config, {})
            if done.get(action.when, 0) <= action.index:
                done[action.when] = action.index + 1
        elif isinstance(action, SetSymlink):
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(action.path), action.target_path))
            self.links[action.path] = LinkState(
                "symlink", action.target_path, posixpath.basename(resolved) in self.releases
            )
        elif isinstance(action, Systemctl):
            self._systemctl(action)
        elif isinstance(action, CheckHealth):
            self._gate(action)
        elif isinstance(action, WriteCaddyfile):
            self._write_caddyfile(action)
        elif isinstance(action, LoadCaddy):
            self._load_caddy(action)
        elif isinstance(action, RecordQuarantine):
            if action.clear:
                self.quarantine.pop(action.key, None)
                legacy = self.quarantine.get(action.version)
                if legacy is not None and legacy.config is None:
                    del self.quarantine[action.version]
            else:
                self.quarantine[action.key] = QuarantineEntry(action.version, action.why, action.key)
        elif isinstance(action, RecordMaintenance):
            self.maintenance = (
                MappingProxyType({"by": action.by, "at": "t", "reason": action.why}) if action.on else None
            )
        elif isinstance(action, RecordGood):
            self._record_good(action)
        elif isinstance(action, RecordHold):
            self.hold = hold_of(dict(action.hold, at="t")) if action.hold else None
        elif isinstance(action, SnapshotDatabase):
            self.snapshots.add(posixpath.basename(action.snapshot).removesuffix(".sqlite"))
            self._taken.add(action.snapshot)
        elif isinstance(action, RestoreDatabase):
            if action.only_if_taken and action.snapshot not in self._taken:
                return
            for unit in action.units:
                self.stop(unit)
        elif isinstance(action, PruneRelease):
            if action.image:
                self.images.discard(action.image)
            in_use = {
                u.environ.get(units.RELEASE_VAR) or posixpath.basename(u.cwd or "")
                for u in self.units.values()
                if u.is_active
            }
            links = {posixpath.basename(link.target) for link in self.links.values() if link and link.target}
            assert action.version not in in_use | links, f"pruned {action.version}, which is in use"
            del self.releases[action.version]
        else:  # pragma: no cover
            raise AssertionError(f"model cannot apply {action!r}")

    def _check_routes(self, ports: Mapping[str, str], what: str) -> None:
        """As the agent: the real upstreams of the configuration on disk, mapped to the app's
        units by port, must all have a gate record."""
        for port in sorted(upstream_ports(self.disk_config())):
            unit = ports.get(str(port))
            if unit and not self.gated(unit):
                if not self._disturbed:  # the plan asked for it: a planner bug
                    self.refusals.append(f"{what}: routes to ungated {unit}")
                raise Failure("ungated", f"refusing to {what}: {unit} has no gate record")

    def _write_caddyfile(self, action: WriteCaddyfile) -> None:
        for root in re.findall(r"root \* /opt/choiros/frontends/([^/\s]+)/", action.content or ""):
            assert root in self.frontends, f"Caddy pointed at frontend {root}, which is not on the host"
        have = self.files.get(action.path)
        if (have.content if have else None) == action.content:
            return
        self._caddy_backups.setdefault(action.path, have)
        self.files[action.path] = None if action.content is None else file_state(action.content)
        try:
            self._check_routes(action.ports, f"write {action.path}")
        except Failure:
            self.files[action.path] = have
            raise

    def runs_disk_fragment(self) -> bool:
        """As the agent asks Caddy (agent/caddyconfig.py `runs`)."""
        state = self.caddy_state()
        seen = {"answered": state.answered, "upstreams": sorted(state.upstreams), "marks": dict(state.marks)}
        return runs(seen, APP, self.disk_fragment(), PORTS)

    def _load_caddy(self, action: LoadCaddy, fail: bool = False) -> None:
        """As the agent: check the routes, then start Caddy if it is down when the step runs,
        else reload it (loads the files on disk); a refused reload puts this apply's Caddy
        files back and loads them, and fails. Then Caddy must run the fragment on disk."""
        if action.unless_loaded and self.runs_disk_fragment():
            return
        self._check_routes(action.ports, "load the Caddy configuration")
        if fail:
            for path, state in self._caddy_backups.items():
                self.files[path] = state
            gated = all(
                self.gated(unit)
                for p in upstream_ports(self.disk_config())
                if (unit := action.ports.get(str(p)))
            )
            if self.caddy_active() and gated:
                self._caddy_load_disk()
            raise Failure("caddy", "Caddy refused to load the new configuration (injected)")
        if self.caddy_active():
            self._caddy_load_disk()
        else:
            self._caddy_start()
        if not self.runs_disk_fragment():
            raise Failure("caddy", "Caddy does not run the configuration that was written")

    def _systemctl(self, action: Systemctl, fail: bool = False) -> None:
        unit = self.units.get(action.unit) or UnitState(action.unit)
        runs = unit.is_active and all(unit.environ.get(k) == v for k, v in (action.unless_runs or {}).items())
        if action.unless_runs and runs:
            return
        if action.verb in ("start", "restart"):
            self._started.add(action.unit)
            if action.unit == CADDY_UNIT:
                if action.verb == "restart":
                    self._caddy_stop()
                self._caddy_start()
                return
            if fail:
                self._fail_start(action.unit)
                raise Failure("systemd", f"{action.unit} failed to start (injected)")
            try:
                self.start(action.unit)
            except Failure:
                self._fail_start(action.unit)
                raise
            return
        if fail:
            raise Failure("systemd", f"systemctl {action.verb} {action.unit} failed (injected)")
        if action.verb == "stop":
            self.stop(action.unit)
        elif action.verb in ("enable", "reenable"):
            assert action.unit == CADDY_UNIT or self.unit_file(action.unit) is not None
            self.units[action.unit] = replace(unit, enabled="enabled")
        elif action.verb == "disable":
            self.units[action.unit] = replace(unit, enabled="disabled")
        else:
            raise AssertionError(action.verb)

    def _gate(self, action: CheckHealth) -> None:
        name = action.unit
        if name is None:
            return
        if action.unless_gated and self.gated(name):
            return
        unit = self.units.get(name) or UnitState(name)
        if not unit.is_active or not self.healthy(self.process(name)):
            raise Failure("health", f"{name} was not healthy")
        self.gates[name] = GateRecord(
            unit.invocation,
            unit.environ.get(units.RELEASE_VAR),
            unit.environ.get(envfile.CONFIG_VAR),
            unit.environ.get(units.HASH_VAR),
        )

    def _record_good(self, action: RecordGood) -> None:
        for name in action.gates:
            record = self.gates.get(name)
            if not self.gated(name) or record is None or record.config not in (None, action.config):
                self.refusals.append(f"good state with ungated {name}")
                raise Failure("ungated", f"not recording a good state: {name} has not passed its gate")
        files = {}
        for path in [*action.files, action.caddyfile]:
            f = self.files.get(path)
            if f is not None and f.kind == "file" and f.content is not None:
                files[path] = RecordedFile(f.content, f.mode or 0o644)
        links = {p: link.target for p in action.links if (link := self.links.get(p)) and link.target}
        state = GoodState(
            action.config,
            action.version,
            action.image,
            action.strategy,
            MappingProxyType(files),
            MappingProxyType(links),
            MappingProxyType(dict(action.gates)),
            action.caddyfile,
        )
        self.good = [state, *(g for g in self.good if g.config != action.config)][:5]

    # -- runs --------------------------------------------------------------------------------

    def _step(self, action: Action, forward: bool = True) -> None:
        if self._disturb is not None and self._steps == self._disturb[1]:
            kind = self._disturb[0]
            self._disturbed = True
            if kind == "reboot":  # the agent dies with everything else
                self.disturb(kind)
                raise Killed
            self.disturb(kind)
        if self._kill_at is not None and self._steps == self._kill_at:
            raise Killed
        self._steps += 1
        fail_at = self._fail_at if forward else self._fail_back_at
        index = self._steps - 1 if forward else self._back_steps
        if not forward:
            self._back_steps += 1
        if fail_at == index and not isinstance(action, CheckHealth):
            self._fail(action)
        self.apply(action)

    def _fail(self, action: Action) -> None:
        """An injected failure, with what the agent (or systemd, or Caddy) leaves behind."""
        if isinstance(action, LoadCaddy):
            self._load_caddy(action, fail=True)
        if isinstance(action, Systemctl):
            self._systemctl(action, fail=True)
        raise Failure("injected", f"{action.summary()['action']} failed (injected)")

    def run(
        self,
        plan: Plan,
        kill_at: int | None = None,
        fail_at: int | None = None,
        cancel_at: int | None = None,
        fail_back_at: int | None = None,
        disturb: tuple[str, int] | None = None,
    ) -> str:
        """Apply a plan as the agent does: on failure, the plan's rollback, under the same
        "lock". `kill_at`: the agent dies before its N-th step (forward and rollback steps
        counted together); `fail_at`: the N-th forward action fails for a reason of the host's
        (a refused Caddyfile, a unit that does not start), unless it is a health gate;
        `fail_back_at`: the same for the N-th step of the rollback; `cancel_at`: the client
        goes away before the N-th forward action (the agent then still gates what it started,
        and goes back to the good state if it stopped half-way); `disturb`: (what, N) someone
        else does to the host before the N-th step.
        Returns ok | failed | rolled_back | rollback_failed | killed | cancelled."""
        self._steps, self._kill_at, self._fail_at, self._taken = 0, kill_at, fail_at, set()
        self._fail_back_at, self._back_steps, self._disturb = fail_back_at, 0, disturb
        self._caddy_backups, self._started, self._disturbed = {}, set(), False
        undoable = ("rollback", "quarantine")
        try:
            for index, action in enumerate(plan.actions):
                finish = isinstance(action, CheckHealth) and action.unit in self._started
                if cancel_at is not None and index >= cancel_at and not finish:
                    done = any(a.on_failure in undoable for a in plan.actions[:index])
                    rest = any(a.on_failure in undoable for a in plan.actions[index:])
                    if done and rest and plan.rollback is not None:
                        self._rollback(plan, action, Failure("cancelled", "cancelled"))
                    return "cancelled"
                try:
                    self._step(action)
                except Failure as failure:
                    if action.on_failure == "stop" and isinstance(action, CheckHealth) and action.unit:
                        self.stop(action.unit)
                        if action.quarantine:
                            key, version = action.quarantine["key"], action.quarantine["version"]
                            self.quarantine[key] = QuarantineEntry(version, str(failure), key)
                        continue
                    if action.on_failure not in ("rollback", "quarantine") or plan.rollback is None:
                        return "failed"
                    return self._rollback(plan, action, failure)
        except Killed:
            return "killed"
        return "ok"

    def _rollback(self, plan: Plan, action: Action, failure: Failure) -> str:
        assert plan.rollback is not None
        back = plan.rollback
        if action.on_failure == "quarantine":
            self.quarantine[back.quarantine_key] = QuarantineEntry(
                back.quarantine_version, str(failure), back.quarantine_key
            )
        for step in back.actions:
            try:
                self._step(step, forward=False)
            except Failure:
                return "rollback_failed"
        return "rolled_back" if back.to else "failed"

    def caddy_state(self) -> CaddyState:
        """What the agent reads from Caddy's admin API: the upstreams and marks it loaded."""
        if not self.caddy_active():
            return CaddyState()
        text = self.caddy_serving
        mark = caddyfile.mark_of(text, APP)
        return CaddyState(
            answered=True,
            upstreams=frozenset(upstream_ports(text)),
            marks=MappingProxyType({APP: mark} if mark else {}),
        )

    def apply_plan(self, plan: Plan) -> Observed:
        for action in plan.actions:
            self.apply(action)
        return self.snapshot()

    def snapshot(self) -> Observed:
        return replace(
            self.base,
            files=MappingProxyType(dict(self.files)),
            links=MappingProxyType(dict(self.links)),
            releases=MappingProxyType(dict(self.releases)),
            units=MappingProxyType(dict(self.units)),
            caddy=self.caddy_state(),
            quarantine=MappingProxyType(dict(self.quarantine)),
            images=frozenset(self.images - {""}),
            runtime=self.runtime,
            frontends=MappingProxyType(dict(self.frontends)),
            snapshots=frozenset(self.snapshots),
            gates=MappingProxyType(dict(self.gates)),
            tasks=MappingProxyType({k: MappingProxyType(dict(v)) for k, v in self.tasks.items()}),
            maintenance=self.maintenance,
            hold=self.hold,
            fragments=MappingProxyType(
                {
                    p: f.content
                    for p, f in self.files.items()
                    if p.startswith("/etc/caddy/apps/") and f and f.content
                }
            ),
            good=tuple(self.good),
        )
