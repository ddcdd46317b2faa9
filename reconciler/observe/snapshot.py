"""The host as observed: an immutable snapshot parsed from the agent's answer.

`request_for` says what to look at (derived from the desired state); `parse` turns the
agent's JSON into typed values. Both are pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from reconciler.spec.model import DesiredState

CADDY_UNIT = "caddy.service"


@dataclass(frozen=True)
class FileState:
    kind: str  # file | symlink | other
    content: str | None = None
    sha256: str | None = None
    mode: int | None = None


@dataclass(frozen=True)
class LinkState:
    kind: str  # symlink | dir | file
    target: str | None = None
    resolves: bool = False


@dataclass(frozen=True)
class UnitState:
    name: str
    load: str = "not-found"  # loaded | not-found | ...
    active: str = "inactive"  # active | inactive | failed | activating | ...
    sub: str = ""
    enabled: str = ""  # enabled | disabled | static | ...
    need_daemon_reload: bool = False
    main_pid: int = 0
    cwd: str | None = None  # working directory of the running process (real path)
    environ: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def exists(self) -> bool:
        return self.load != "not-found"

    @property
    def is_active(self) -> bool:
        return self.active in ("active", "reloading")

    @property
    def is_enabled(self) -> bool:
        return self.enabled in ("enabled", "enabled-runtime", "linked", "alias")


@dataclass(frozen=True)
class ReleaseState:
    version: str
    sha256: str | None = None
    uploaded: str = ""  # ISO time the reconciler put it there ("" if unknown)
    image: str | None = None  # the container image this release runs, for image releases


@dataclass(frozen=True)
class UserState:
    uid: int
    has_group: bool  # a group of the same name exists (the environment file's group)


@dataclass(frozen=True)
class Observed:
    hostname: str
    files: Mapping[str, FileState | None]
    links: Mapping[str, LinkState | None]
    releases: Mapping[str, ReleaseState]
    units: Mapping[str, UnitState]
    commands: Mapping[str, str | None]
    caddy_loaded_sha: str | None
    quarantine: Mapping[str, str]  # version -> why
    lock_holder: Mapping[str, Any] | None
    images: frozenset[str] = frozenset()  # container images present (repo:tag), when asked
    snapshots: frozenset[str] = frozenset()  # releases with a database snapshot
    # The users asked about (backend.user); None: no such user on the host.
    users: Mapping[str, UserState | None] = field(default_factory=lambda: MappingProxyType({}))
    fingerprint: str = ""

    def file(self, path: str) -> FileState | None:
        return self.files.get(path)

    def content(self, path: str) -> str | None:
        f = self.files.get(path)
        return f.content if f is not None and f.kind == "file" else None

    def unit(self, name: str) -> UnitState:
        return self.units.get(name) or UnitState(name)

    def link(self, path: str) -> LinkState | None:
        return self.links.get(path)


def unit_path(desired: DesiredState, unit: str) -> str:
    return f"{desired.layout.units}/{unit}"


def request_for(desired: DesiredState) -> dict[str, Any]:
    """What the agent must look at for this desired state (independent of the version)."""
    layout = desired.layout
    colours = ("blue", "green")
    units = [desired.backend_unit, desired.frontend_unit, *(desired.colour_unit(c) for c in colours)]
    return {
        "state": layout.state,
        "releases": layout.releases,
        "files": [
            *(unit_path(desired, u) for u in units),
            layout.env_file,
            desired.proxy.caddyfile,
        ],
        "links": [layout.current, layout.previous, *(desired.colour_link(c) for c in colours)],
        "units": [*units, CADDY_UNIT],
        "commands": ["caddy", "systemctl", "podman"],
        "images": desired.release.image is not None,
        "users": [desired.backend.user] if desired.backend.user else [],
    }


def _freeze(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


def parse(raw: Mapping[str, Any]) -> Observed:
    """The agent's snapshot as values; its fingerprint is computed by the agent itself."""
    files = {
        path: None if v is None else FileState(v["kind"], v.get("content"), v.get("sha256"), v.get("mode"))
        for path, v in raw["files"].items()
    }
    links = {
        path: None if v is None else LinkState(v["kind"], v.get("target"), bool(v.get("resolves")))
        for path, v in raw["links"].items()
    }
    releases = {}
    for name, v in raw["releases"].items():
        meta = v.get("meta") if isinstance(v.get("meta"), dict) else {}
        releases[name] = ReleaseState(
            name, meta.get("sha256"), str(meta.get("uploaded") or ""), meta.get("image")
        )
    units = {
        name: UnitState(
            name=name,
            load=v["load"],
            active=v["active"],
            sub=v["sub"],
            enabled=v["enabled"],
            need_daemon_reload=v["need_daemon_reload"],
            main_pid=v["main_pid"],
            cwd=v.get("cwd"),
            environ=_freeze(v.get("environ") or {}),
        )
        for name, v in raw["units"].items()
    }
    state = raw.get("state") or {}
    loaded = state.get("caddy_loaded") or {}
    quarantine = {
        version: str((info or {}).get("reason", ""))
        for version, info in (state.get("quarantine") or {}).items()
    }
    lock = raw.get("lock") or {}
    return Observed(
        hostname=raw["host"]["hostname"],
        files=_freeze(files),
        links=_freeze(links),
        releases=_freeze(releases),
        units=_freeze(units),
        commands=_freeze(raw.get("which") or {}),
        caddy_loaded_sha=loaded.get("sha256") if isinstance(loaded, dict) else None,
        quarantine=_freeze(quarantine),
        lock_holder=_freeze(lock.get("holder") or {}) if lock.get("held") else None,
        images=frozenset(raw.get("images") or ()),
        snapshots=frozenset((raw.get("state") or {}).get("snapshots") or ()),
        users=_freeze(
            {
                name: None if v is None else UserState(int(v["uid"]), bool(v["group"]))
                for name, v in (raw.get("users") or {}).items()
            }
        ),
        fingerprint=str(raw.get("fingerprint", "")),
    )
