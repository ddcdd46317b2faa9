"""A model of a host: applies typed actions to an Observed snapshot the way the agent and
systemd would, so planner properties (idempotence, convergence) can be checked without I/O."""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from reconciler.observe.snapshot import CADDY_UNIT, FileState, LinkState, Observed, ReleaseState, UnitState
from reconciler.plan.actions import (
    Action,
    CheckHealth,
    DaemonReload,
    LoadCaddy,
    LoadImage,
    Plan,
    PruneRelease,
    RecordQuarantine,
    RemoveFile,
    RestoreDatabase,
    SetSymlink,
    SnapshotDatabase,
    Systemctl,
    UploadRelease,
    WriteCaddyfile,
    WriteFile,
)
from reconciler.render import envfile, units


def file_state(content: str, mode: int = 0o644) -> FileState:
    return FileState("file", content, hashlib.sha256(content.encode()).hexdigest(), mode)


class ModelHost:
    def __init__(self, observed: Observed, units_dir: str = "/etc/systemd/system") -> None:
        self.files: dict[str, FileState | None] = dict(observed.files)
        self.links: dict[str, LinkState | None] = dict(observed.links)
        self.releases: dict[str, ReleaseState] = dict(observed.releases)
        self.units: dict[str, UnitState] = dict(observed.units)
        self.caddy_loaded = observed.caddy_loaded_sha
        self.quarantine = dict(observed.quarantine)
        self.images = set(observed.images)
        self.snapshots = set(observed.snapshots)
        self.base = observed
        self.units_dir = units_dir

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

    def start(self, name: str) -> None:
        text = self.unit_file(name)
        unit = self.units.get(name) or UnitState(name)
        if name == CADDY_UNIT:
            self.units[name] = replace(unit, active="active", sub="running", main_pid=99)
            path = next(p for p in self.files if p.endswith("Caddyfile"))
            f = self.files.get(path)
            self.caddy_loaded = f.sha256 if f else None
            return
        assert text is not None, f"start of {name} without a unit file"
        assert not unit.need_daemon_reload, f"start of {name} before daemon-reload"
        parsed = units.parse(text)
        service = dict(parsed.get("Service", []))
        exec_start = service.get("ExecStart", "")
        container = exec_start.startswith(units.PODMAN)
        args = dict(w.split("=", 1) for w in exec_start.split() if w.startswith("--") and "=" in w)
        workdir = service.get("WorkingDirectory", "/")
        environ: dict[str, Any] = {}
        marker = units.marker_of(text)
        if marker:
            environ[units.HASH_VAR] = marker
        env_path = args.get("--env-file") if container else service.get("EnvironmentFile")
        if env_path:
            env = self.files.get(env_path)
            assert env is not None, "EnvironmentFile missing at start"
            h = envfile.hash_of(env.content)
            if h:
                environ[envfile.HASH_VAR] = h
        if container:
            release = None
            for word in exec_start.split():
                if word.startswith(f"--env={units.RELEASE_VAR}="):
                    release = word.split("=", 2)[2]
            assert release in self.releases, f"{name} started with missing release {release}"
            assert self.releases[release].image in self.images, f"{name} started without its image"
            environ[units.RELEASE_VAR] = release
            self.units[name] = replace(
                unit,
                load="loaded",
                active="active",
                sub="running",
                main_pid=1000,
                cwd=None,
                environ=MappingProxyType(environ),
            )
            return
        cwd = self.resolve(workdir)
        version = posixpath.basename(cwd)
        assert version in self.releases, f"{name} started in missing release {cwd}"
        self.units[name] = replace(
            unit,
            load="loaded",
            active="active",
            sub="running",
            main_pid=1000,
            cwd=cwd,
            environ=MappingProxyType(environ),
        )

    # -- actions ---------------------------------------------------------------------------

    def apply(self, action: Action) -> None:
        if isinstance(action, LoadImage):
            self.images.add(action.image)
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
            for name, unit in list(self.units.items()):
                if name == CADDY_UNIT:
                    continue
                present = self.unit_file(name) is not None
                load = "loaded" if present else ("loaded" if unit.is_active else "not-found")
                self.units[name] = replace(unit, need_daemon_reload=False, load=load)
        elif isinstance(action, SetSymlink):
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(action.path), action.target_path))
            self.links[action.path] = LinkState(
                "symlink", action.target_path, posixpath.basename(resolved) in self.releases
            )
        elif isinstance(action, Systemctl):
            unit = self.units.get(action.unit) or UnitState(action.unit)
            if action.verb in ("start", "restart"):
                self.start(action.unit)
            elif action.verb == "stop":
                self.units[action.unit] = replace(
                    unit, active="inactive", sub="dead", main_pid=0, cwd=None, environ=MappingProxyType({})
                )
            elif action.verb in ("enable", "reenable"):
                assert action.unit == CADDY_UNIT or self.unit_file(action.unit) is not None
                self.units[action.unit] = replace(unit, enabled="enabled")
            elif action.verb == "disable":
                self.units[action.unit] = replace(unit, enabled="disabled")
            else:
                raise AssertionError(action.verb)
        elif isinstance(action, WriteCaddyfile):
            self.files[action.path] = file_state(action.content)
        elif isinstance(action, LoadCaddy):
            self.start(CADDY_UNIT)
        elif isinstance(action, RecordQuarantine):
            if action.clear:
                self.quarantine.pop(action.version, None)
            else:
                self.quarantine[action.version] = action.why
        elif isinstance(action, CheckHealth):
            pass
        elif isinstance(action, SnapshotDatabase):
            self.snapshots.add(posixpath.basename(action.snapshot).removesuffix(".sqlite"))
        elif isinstance(action, RestoreDatabase):
            for unit in action.units:
                self.units[unit] = replace(
                    self.units[unit],
                    active="inactive",
                    sub="dead",
                    main_pid=0,
                    cwd=None,
                    environ=MappingProxyType({}),
                )
        elif isinstance(action, PruneRelease):
            if action.image:
                self.images.discard(action.image)
            in_use = {posixpath.basename(u.cwd) for u in self.units.values() if u.cwd and u.is_active}
            links = {posixpath.basename(link.target) for link in self.links.values() if link and link.target}
            assert action.version not in in_use | links, f"pruned {action.version}, which is in use"
            del self.releases[action.version]
        else:  # pragma: no cover
            raise AssertionError(f"model cannot apply {action!r}")

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
            quarantine=MappingProxyType(dict(self.quarantine)),
            images=frozenset(self.images),
            snapshots=frozenset(self.snapshots),
        )
