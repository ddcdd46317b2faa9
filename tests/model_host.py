"""A model of a host: applies typed actions to an Observed snapshot the way the agent and
systemd would, so planner properties can be checked without I/O.

It models what safety depends on, not only convergence: processes with invocations, the
markers they inherit, whether they are healthy, crash loops (`tick`), gate records, good
states, quarantine, the agent's guards and its rollback on failure, and the agent being
killed at any step (`run(plan, kill_at=N)`). The agent's refusals are modelled too (Caddy
pointed at an ungated process, a good state recorded with an ungated process): a plan that
runs into one is a planner bug, which `refusals` lets a test see.
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

from reconciler.observe.snapshot import (
    CADDY_UNIT,
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
    MakeShared,
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


def file_state(content: str, mode: int = 0o644) -> FileState:
    return FileState("file", content, hashlib.sha256(content.encode()).hexdigest(), mode)


class Failure(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Process:
    """What a test's health rule looks at: the unit's process and the env it was given."""

    unit: str
    release: str | None
    env: Mapping[str, str]


Healthy = Callable[[Process], bool]


class Killed(Exception):
    pass


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
        self.caddy_loaded = observed.caddy_loaded_sha
        # What Caddy serves is what it last loaded, whatever is on disk since.
        loaded = next((f for p, f in observed.files.items() if p.startswith("/etc/caddy/apps/") and f), None)
        self.caddy_serving = loaded.content if loaded and loaded.sha256 == self.caddy_loaded else None
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
        self.env_of: dict[str, dict[str, str]] = {}  # unit -> env values its process got
        self.invocations = itertools.count(1)
        self.refusals: list[str] = []  # the agent refused something the planner asked for
        self.caddy_violations: list[str] = []  # Caddy was pointed at an ungated process
        self._steps = 0
        self._kill_at: int | None = None
        self._fail_at: int | None = None
        self._taken: set[str] = set()

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

    def caddyfile_path(self) -> str:
        """The app's fragment: what Caddy serves for it, and what "loaded" is recorded for."""
        return next(p for p in self.files if p.startswith("/etc/caddy/apps/"))

    def process(self, name: str) -> Process:
        unit = self.units.get(name) or UnitState(name)
        return Process(name, unit.environ.get(units.RELEASE_VAR), self.env_of.get(name, {}))

    def gated(self, name: str) -> bool:
        unit = self.units.get(name) or UnitState(name)
        record = self.gates.get(name)
        return unit.is_active and record is not None and record.invocation == unit.invocation

    def routed_units(self) -> list[str]:
        """The backends Caddy's loaded configuration sends traffic to."""
        if self.caddy_serving is None or not (self.units.get(CADDY_UNIT) or UnitState("")).is_active:
            return []
        text = self.caddy_serving
        if "# Managed by reconciler" not in text:
            return []
        colour = caddyfile.routed_colour(text)
        app = text.split("(", 1)[1].split(")", 1)[0]
        if colour:
            return [f"{app}-backend-{colour}.service"]
        return [f"{app}-backend.service"]

    def _check_caddy(self) -> None:
        for unit in self.routed_units():
            if not self.gated(unit):
                self.caddy_violations.append(f"Caddy routes to {unit}, which has no gate record")

    def start(self, name: str) -> None:
        text = self.unit_file(name)
        unit = self.units.get(name) or UnitState(name)
        if name == CADDY_UNIT:
            self.units[name] = replace(unit, active="active", sub="running", main_pid=99)
            f = self.files.get(self.caddyfile_path())
            self.caddy_loaded = f.sha256 if f else None
            self.caddy_serving = f.content if f else None
            return
        assert text is not None, f"start of {name} without a unit file"
        assert not unit.need_daemon_reload, f"start of {name} before daemon-reload"
        parsed = units.parse(text)
        service = parsed.get("Service", [])
        values = dict(service)
        exec_start = values.get("ExecStart", "").lstrip("@-:+!")  # systemd's prefixes
        container = exec_start.startswith((units.PODMAN, "/usr/bin/docker"))
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
        if container:
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
        self.env_of[name] = env_values
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
        self.env_of.pop(name, None)

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
            caddy = self.files.get(self.caddyfile_path())
            assert f"/{name}/" not in ((caddy.content or "") if caddy else ""), (
                f"pruned {name}, which Caddy serves"
            )
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
        elif isinstance(action, MakeShared):
            for path in action.paths:
                self.links[f"{action.shared}/{path}"] = LinkState("dir", None, True)
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
            for unit in action.routes_to:
                if not self.gated(unit):
                    self.refusals.append(f"Caddy to ungated {unit}")
                    raise Failure("ungated", f"refusing to route Caddy to {unit}")
            for root in re.findall(r"root \* /opt/choiros/frontends/([^/\s]+)/", action.content or ""):
                assert root in self.frontends, f"Caddy pointed at frontend {root}, which is not on the host"
            self.files[action.path] = None if action.content is None else file_state(action.content)
        elif isinstance(action, LoadCaddy):
            f = self.files.get(action.fragment)
            caddy = self.units.get(CADDY_UNIT) or UnitState(CADDY_UNIT)
            if action.unless_loaded and f is not None and f.sha256 == self.caddy_loaded and caddy.is_active:
                return
            self.start(CADDY_UNIT)
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

    def _systemctl(self, action: Systemctl) -> None:
        unit = self.units.get(action.unit) or UnitState(action.unit)
        runs = unit.is_active and all(unit.environ.get(k) == v for k, v in (action.unless_runs or {}).items())
        if action.unless_runs and runs:
            return
        if action.verb in ("start", "restart"):
            self.start(action.unit)
        elif action.verb == "stop":
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
        if self._kill_at is not None and self._steps == self._kill_at:
            raise Killed
        self._steps += 1
        if forward and self._fail_at == self._steps - 1 and not isinstance(action, CheckHealth):
            raise Failure("injected", f"{action.summary()['action']} failed (injected)")
        self.apply(action)
        if isinstance(action, LoadCaddy):
            self._check_caddy()

    def run(
        self, plan: Plan, kill_at: int | None = None, fail_at: int | None = None, cancel_at: int | None = None
    ) -> str:
        """Apply a plan as the agent does: on failure, the plan's rollback, under the same
        "lock". `kill_at`: the agent dies before its N-th step (forward and rollback steps
        counted together); `fail_at`: the N-th forward action fails for a reason of the host's
        (a refused Caddyfile, a failing daemon-reload), unless it is a health gate;
        `cancel_at`: the client goes away before the N-th forward action (the agent then still
        gates what it started, and goes back to the good state if it stopped half-way).
        Returns ok | failed | rolled_back | rollback_failed | killed | cancelled."""
        self._steps, self._kill_at, self._fail_at, self._taken = 0, kill_at, fail_at, set()
        started: set[str] = set()
        undoable = ("rollback", "quarantine")
        try:
            for index, action in enumerate(plan.actions):
                finish = isinstance(action, CheckHealth) and action.unit in started
                if cancel_at is not None and index >= cancel_at and not finish:
                    done = any(a.on_failure in undoable for a in plan.actions[:index])
                    rest = any(a.on_failure in undoable for a in plan.actions[index:])
                    if done and rest and plan.rollback is not None:
                        self._rollback(plan, action, Failure("cancelled", "cancelled"))
                    return "cancelled"
                if isinstance(action, Systemctl) and action.verb in ("start", "restart"):
                    started.add(action.unit)
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
            caddy_loaded_sha=self.caddy_loaded,
            caddy_routes=caddyfile.routed_colour(self.caddy_serving) if self.caddy_serving else None,
            quarantine=MappingProxyType(dict(self.quarantine)),
            images=frozenset(self.images - {""}),
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
