"""The host as observed: an immutable snapshot parsed from the agent's answer.

`request_for` says what to look at (derived from the desired state); `parse` turns the
agent's JSON into typed values. Both are pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from reconciler.agent.gates import gate_holds
from reconciler.render.envfile import CONFIG_VAR
from reconciler.render.units import RELEASE_VAR
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
    invocation: str = ""  # names this start of the unit; every start, automatic ones too, is new
    restarts: int = 0  # automatic restarts by systemd since the last deliberate start
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

    @property
    def is_crashing(self) -> bool:
        """Failed, or waiting to be restarted after its process died."""
        return self.active == "failed" or (self.active == "activating" and self.sub == "auto-restart")

    @property
    def release(self) -> str | None:
        """The release its process runs, as the process itself says."""
        return self.environ.get(RELEASE_VAR) if self.is_active else None

    @property
    def config(self) -> str | None:
        """The configuration fingerprint its process was started with."""
        return self.environ.get(CONFIG_VAR) if self.is_active else None


@dataclass(frozen=True)
class GateRecord:
    """A process that passed its health gate, as recorded on the host when it passed."""

    invocation: str
    release: str | None = None
    config: str | None = None
    unit_hash: str | None = None
    at: str = ""  # when it passed (ISO time, UTC)


@dataclass(frozen=True)
class GateParams:
    """How a unit is gated: recorded with a good state so a rollback gates it the same way."""

    url: str
    timeout: float
    interval: float
    passes: int
    stable: float = 0.0
    expect_version: str | None = None
    any_status: bool = False
    version_at: Mapping[str, str] | None = None  # {"json": "a.b"} or {"header": "X-App-Version"}


@dataclass(frozen=True)
class RecordedFile:
    content: str
    mode: int


@dataclass(frozen=True)
class GoodState:
    """A complete state that served and passed its gates: what a rollback restores."""

    config: str
    version: str
    image: str | None
    strategy: str
    files: Mapping[str, RecordedFile | None]  # unit files, environment files, Caddy; None: absent
    links: Mapping[str, str]  # path -> target as written
    gates: Mapping[str, GateParams]  # the units that run in it, and their gates
    caddyfile: str
    at: str = ""  # when it was recorded (ISO time, UTC)
    since: str = ""  # when its release started serving (older records: "")


@dataclass(frozen=True)
class QuarantineEntry:
    version: str
    reason: str
    config: str | None  # None: an entry of an older reconciler, for the whole version


@dataclass(frozen=True)
class Pause:
    """`reconcile pause` recorded on the host: no run changes anything until `resume`."""

    by: str
    at: str
    reason: str

    def describe(self) -> str:
        return f"paused by {self.by} since {self.at}: {self.reason or 'no reason given'}"


@dataclass(frozen=True)
class Hold:
    """`reconcile rollback` recorded on the host: the host is held at a recorded good state by
    hand. Runs keep it there (correcting drift of that state) while the desired file still
    names the configuration it named when the hold was made; `reconcile resume` ends it."""

    version: str  # the release held
    config: str  # the good state held (its configuration fingerprint)
    by: str
    at: str
    reason: str
    origin: str  # the release it was rolled back from ("" when nothing of ours served)
    origin_config: str
    desired_config: str  # what the desired file named when the hold was made
    desired_version: str
    commit: str | None = None  # the desired file's commit then, when it was in git
    # Configurations this hold has rolled back from (a second rollback goes further back).
    passed: tuple[str, ...] = ()

    def describe(self) -> str:
        origin = f" (rolled back from {self.origin})" if self.origin else ""
        why = self.reason or "no reason given"
        return f"held at {self.version} by {self.by} since {self.at}{origin}: {why}"


@dataclass(frozen=True)
class ReleaseState:
    version: str
    sha256: str | None = None
    uploaded: str = ""  # ISO time the reconciler put it there ("" if unknown)
    image: str | None = None  # the container image this release runs, for image releases


@dataclass(frozen=True)
class CaddyState:
    """What Caddy runs, as Caddy itself says (its admin API; see agent/caddyconfig.py): the
    loopback ports its reverse proxies send traffic to, and each app's fragment mark."""

    answered: bool = False  # Caddy runs and its admin API answered
    upstreams: frozenset[int] = frozenset()
    marks: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    error: str | None = None  # why it did not answer, while it runs


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
    quarantine: Mapping[str, QuarantineEntry]  # configuration fingerprint -> what failed
    lock_holder: Mapping[str, Any] | None
    images: frozenset[str] = frozenset()  # container images present (repo:tag, repo:tag@digest)
    runtime: str | None = None  # the container runtime images run with (podman | docker)
    runtime_error: str | None = None  # why there is none, when one was asked for
    frontends: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))  # name -> mtime
    snapshots: frozenset[str] = frozenset()  # releases with a database snapshot
    gates: Mapping[str, GateRecord] = field(default_factory=lambda: MappingProxyType({}))
    fragments: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # every app's
    tasks: Mapping[str, Mapping[str, int]] = field(default_factory=lambda: MappingProxyType({}))
    maintenance: Mapping[str, str] | None = None  # switched on by hand: by, at, reason
    caddy: CaddyState = CaddyState()  # what Caddy runs: its loaded configuration, not a note of ours
    good: tuple[GoodState, ...] = ()  # newest first
    state_errors: tuple[str, ...] = ()  # records on the host that could not be read
    user: int = 0  # the uid the agent ran as
    # The users asked about (backend.user); None: no such user on the host.
    users: Mapping[str, UserState | None] = field(default_factory=lambda: MappingProxyType({}))
    paused: Pause | None = None
    hold: Hold | None = None  # `reconcile rollback` left the host held at a good state
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

    def gated(self, name: str) -> bool:
        """The unit's process now running passed its health gate (recorded on the host)."""
        unit = self.unit(name)
        record = self.gates.get(name)
        return gate_holds(unit.active, unit.invocation, record.invocation if record else None)

    def quarantined(self, config: str, version: str) -> QuarantineEntry | None:
        entry = self.quarantine.get(config)
        if entry is not None:
            return entry
        legacy = self.quarantine.get(version)
        return legacy if legacy is not None and legacy.config is None else None


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
            *(desired.colour_env_file(c) for c in colours),
            desired.proxy.caddyfile,
            desired.proxy.fragment(desired.app),
            desired.proxy.maintenance_flag(desired.app),
        ],
        "caddy_main": desired.proxy.caddyfile,
        "links": [
            layout.current,
            layout.previous,
            *(desired.colour_link(c) for c in colours),
            *(f"{layout.release_dir(desired.release.version)}/{p}" for p in desired.shared),
        ],
        "globs": [f"{desired.proxy.apps_dir}/*.caddy"],
        "units": [*units, CADDY_UNIT],
        "commands": ["caddy", "systemctl", "podman", "docker"],
        # The runtime to list images of: the one named, or "auto" (Podman, else Docker).
        "images": (desired.release.runtime or "auto") if desired.release.image else None,
        "frontends": desired.frontends if desired.frontend.image else None,
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
            invocation=str(v.get("invocation") or ""),
            restarts=int(v.get("restarts") or 0),
            cwd=v.get("cwd"),
            environ=_freeze(v.get("environ") or {}),
        )
        for name, v in raw["units"].items()
    }
    state = raw.get("state") or {}
    lock = raw.get("lock") or {}
    good, good_errors = _goods(state.get("good") or [])
    return Observed(
        hostname=raw["host"]["hostname"],
        files=_freeze(files),
        links=_freeze(links),
        releases=_freeze(releases),
        units=_freeze(units),
        commands=_freeze(raw.get("which") or {}),
        caddy=_caddy(raw.get("caddy") or {}),
        quarantine=_freeze(_quarantine(state.get("quarantine") or {})),
        lock_holder=_freeze(lock.get("holder") or {}) if lock.get("held") else None,
        images=frozenset(raw.get("images") or ()),
        runtime=raw.get("runtime"),
        runtime_error=raw.get("runtime_error"),
        frontends=_freeze({str(k): float(v) for k, v in (raw.get("frontends") or {}).items()}),
        snapshots=frozenset(state.get("snapshots") or ()),
        gates=_freeze(_gates(state.get("gates") or {})),
        fragments=_freeze({p: str(t) for p, t in (raw.get("globbed") or {}).items()}),
        maintenance=_maintenance(state.get("maintenance")),
        tasks=_freeze(
            {
                config: _freeze({k: int(v) for k, v in done.items() if isinstance(v, int)})
                for config, done in (state.get("tasks") or {}).items()
                if isinstance(done, dict)
            }
        ),
        good=good,
        state_errors=tuple(str(e) for e in state.get("errors") or ()) + good_errors,
        user=int(raw["host"].get("uid", 0)),
        users=_freeze(
            {
                name: None if v is None else UserState(int(v["uid"]), bool(v["group"]))
                for name, v in (raw.get("users") or {}).items()
            }
        ),
        paused=pause_of(state.get("paused")),
        hold=hold_of(state.get("held")),
        fingerprint=str(raw.get("fingerprint", "")),
    )


def _caddy(raw: Mapping[str, Any]) -> CaddyState:
    return CaddyState(
        answered=bool(raw.get("answered")),
        upstreams=frozenset(int(p) for p in raw.get("upstreams") or ()),
        marks=_freeze({str(k): str(v) for k, v in (raw.get("marks") or {}).items()}),
        error=raw.get("error"),
    )


def _maintenance(raw: Any) -> Mapping[str, str] | None:
    if not isinstance(raw, dict) or not raw.get("on"):
        return None
    return _freeze({k: str(raw.get(k, "")) for k in ("by", "at", "reason")})


def pause_of(raw: Any) -> Pause | None:
    if not isinstance(raw, dict) or not raw:
        return None
    return Pause(str(raw.get("by") or "?"), str(raw.get("at") or "?"), str(raw.get("reason") or ""))


def hold_of(raw: Any) -> Hold | None:
    """The hold as recorded; a record missing what identifies the held state counts as none
    (the planner then moves the host as the desired file says, which the record allowed)."""
    if not isinstance(raw, dict) or not raw.get("version") or not raw.get("config"):
        return None

    def text(key: str) -> str:
        return str(raw.get(key) or "")

    passed = raw.get("passed")
    return Hold(
        version=text("version"),
        config=text("config"),
        by=text("by") or "?",
        at=text("at") or "?",
        reason=text("reason"),
        origin=text("origin"),
        origin_config=text("origin_config"),
        desired_config=text("desired_config"),
        desired_version=text("desired_version"),
        commit=raw.get("commit") if isinstance(raw.get("commit"), str) else None,
        passed=tuple(str(c) for c in passed) if isinstance(passed, list) else (),
    )


def _quarantine(raw: Mapping[str, Any]) -> dict[str, QuarantineEntry]:
    out = {}
    for key, value in raw.items():
        info = value if isinstance(value, dict) else {}
        if "version" in info:
            out[key] = QuarantineEntry(str(info["version"]), str(info.get("reason", "")), key)
        else:  # written by an older reconciler: keyed by version alone
            out[key] = QuarantineEntry(key, str(info.get("reason", "")), None)
    return out


def _gates(raw: Mapping[str, Any]) -> dict[str, GateRecord]:
    return {
        unit: GateRecord(
            str(r["invocation"]),
            r.get("release"),
            r.get("config"),
            r.get("unit_hash"),
            str(r.get("at") or ""),
        )
        for unit, r in raw.items()
        if isinstance(r, dict) and r.get("invocation")
    }


def _goods(raw: list[Any]) -> tuple[tuple[GoodState, ...], tuple[str, ...]]:
    good, errors = [], []
    for index, entry in enumerate(raw):
        try:
            good.append(_good(entry))
        except (KeyError, TypeError, ValueError, AttributeError):
            errors.append(
                f"the good-state record #{index + 1} in the host's good.json is malformed: move the "
                "file away (it only enables rollback) and run again"
            )
    return tuple(good), tuple(errors)


def _good(raw: Mapping[str, Any]) -> GoodState:
    return GoodState(
        config=str(raw["config"]),
        version=str(raw["version"]),
        image=raw.get("image"),
        strategy=str(raw.get("strategy", "")),
        files=_freeze(
            {p: RecordedFile(str(f["content"]), int(f["mode"])) for p, f in (raw.get("files") or {}).items()}
        ),
        links=_freeze({p: str(t) for p, t in (raw.get("links") or {}).items()}),
        gates=_freeze({u: GateParams(**g) for u, g in (raw.get("gates") or {}).items()}),
        caddyfile=str(raw.get("caddyfile", "")),
        at=str(raw.get("at") or ""),
        since=str(raw.get("since") or raw.get("at") or ""),
    )
