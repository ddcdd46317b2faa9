"""Typed actions. Each says what it does, to what, and why (the observed fact it resolves).

`wire()` is the action as the host agent receives it: plain data, never a shell string.
Fields that only the machine running the reconciler needs (the artifact path) stay off it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from reconciler.observe.snapshot import GateParams

# What the agent does when an action fails (decided in plan/policy.py, done in agent/apply.py):
#   report      stop here, say what failed
#   rollback    run the request's rollback: back to the host's last good state
#   quarantine  the same, after quarantining the desired configuration (it failed its gate)
#   stop        stop this (idle) unit, quarantine its configuration, go on with the plan
OnFailure = Literal["report", "rollback", "quarantine", "stop"]


def _plain(value: Any) -> Any:
    """A value as JSON would carry it."""
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


class Phase(IntEnum):
    """Apply order. New things start before the proxy points at them (make-before-break);
    old things stop only after the proxy has stopped pointing at them."""

    CHECKPOINT = 5  # what serves now recorded as good, if it is not yet: a rollback target
    STAGE = 10  # upload releases: invisible until switched to
    WRITE = 20  # unit files, env file
    DAEMON_RELOAD = 30
    SNAPSHOT = 35  # the database, before any process of the new release runs
    MIGRATE = 38  # release tasks before the switch: the new release's migrations, old one serving
    SWITCH = 40  # `current` / `previous` symlinks
    RESTORE = 45  # a snapshot back into place, the backend stopped for it
    RESTART = 50
    START = 60  # enable + start units that should run
    VERIFY = 70  # health gates before the proxy sends traffic
    PROXY = 80  # validated Caddyfile, graceful reload
    AFTER_SWITCH = 85  # release tasks once the new release serves
    RETIRE = 90  # stop and remove what is no longer wanted
    PRUNE = 95  # old releases beyond release.keep
    RECORD = 100


A = TypeVar("A", bound="Action")


@dataclass(frozen=True)
class Action:
    reason: str
    # Not constructor arguments (keyword-only fields after the subclasses' own would need
    # Python 3.10): each kind has its default phase, `at()` moves one, and the planner's
    # failure policy (plan/policy.py) sets `on_failure`.
    phase: Phase = field(default=Phase.WRITE, init=False)
    on_failure: OnFailure = field(default="report", init=False)

    kind: ClassVar[str] = ""
    label: ClassVar[str] = ""
    _local_only: ClassVar[frozenset[str]] = frozenset()

    @property
    def target(self) -> str:
        raise NotImplementedError

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            if f.name not in ("reason", "phase") and f.name not in self._local_only:
                out[f.name] = _plain(getattr(self, f.name))
        return out

    def summary(self) -> dict[str, str]:
        """The public form: what --json prints and the history keeps. Never file contents."""
        return {"action": self.label, "target": self.target, "reason": self.reason}

    def because(self: A, reason: str) -> A:
        """The same action, for another reason."""
        return _set(self, reason=reason)

    def at(self: A, phase: Phase) -> A:
        """The same action, run in another phase."""
        return _set(self, phase=phase)

    def failing(self: A, on_failure: OnFailure) -> A:
        """The same action, with what the agent does when it fails."""
        return _set(self, on_failure=on_failure)


def _set(action: A, **values: Any) -> A:
    out = copy.copy(action)
    for name, value in values.items():
        object.__setattr__(out, name, value)
    return out


@dataclass(frozen=True)
class UploadRelease(Action):
    version: str
    releases: str
    source: Path
    sha256: str | None = None
    phase: Phase = field(default=Phase.STAGE, init=False)
    kind: ClassVar[str] = "upload_release"
    label: ClassVar[str] = "upload"
    _local_only: ClassVar[frozenset[str]] = frozenset({"source"})

    @property
    def target(self) -> str:
        return f"{self.releases}/{self.version}"


@dataclass(frozen=True)
class LoadImage(Action):
    """Put a release's container image on the host (load or import of the archive sent along,
    or a pull), and copy its static frontend out into releases/<version>."""

    version: str
    image: str
    releases: str
    state: str
    source: Path | None  # the archive on this machine; None: pull
    sha256: str | None = None
    digest: str | None = None
    image_root: str = "/app"
    static_dir: str | None = None  # inside image_root; None: no static frontend to copy out
    runtime: str = "podman"
    # Registry credentials for the pull: on the wire to the agent only (its standard input),
    # never in a summary, a log, the history or --json, never in repr().
    auth: Mapping[str, str] | None = field(default=None, repr=False, compare=False)
    phase: Phase = field(default=Phase.STAGE, init=False)
    kind: ClassVar[str] = "load_image"
    label: ClassVar[str] = "load-image"
    _local_only: ClassVar[frozenset[str]] = frozenset({"source"})

    @property
    def target(self) -> str:
        return self.image


@dataclass(frozen=True)
class LinkShared(Action):
    """Link a release's shared paths (uploads, caches) to the one copy under <root>/shared,
    seeding a shared folder from the release the first time."""

    release: str  # the release folder
    shared: str  # <root>/shared
    paths: tuple[str, ...]
    owner: str | None = None  # backend.user: the app writes there
    phase: Phase = field(default=Phase.STAGE, init=False)
    kind: ClassVar[str] = "link_shared"
    label: ClassVar[str] = "link-shared"

    @property
    def target(self) -> str:
        return f"{self.release}/{{{','.join(self.paths)}}}"


@dataclass(frozen=True)
class RunTask(Action):
    """A release task: one command, run as the backend would run (its release folder, its
    environment file, its user; for an image, in a container of it), once per configuration.
    A `before_switch` task that fails puts the database back as this apply's snapshot had it."""

    when: str  # before_switch | after_switch
    index: int  # its place in the list: what is recorded as done
    config: str  # the configuration it runs for
    argv: tuple[str, ...]  # argv[0] already absolute when it lives in the release
    workdir: str
    env_file: str
    release: str  # the version, told to the task as RECONCILER_RELEASE
    app: str
    timeout: float
    user: str | None = None
    container: tuple[str, ...] = ()  # for an image: the `podman run` words before argv
    database: str | None = None  # restored from `snapshot` when a before_switch task fails
    snapshot: str | None = None
    # The backend's StateDirectory=: systemd makes /var/lib/<it> and gives it to `user`, as it
    # does when the backend starts, which on a first deploy is only after its migrations.
    state_directory: str | None = None
    kind: ClassVar[str] = "run_task"
    label: ClassVar[str] = "task"

    @property
    def target(self) -> str:
        return f"{self.when}[{self.index}]: {' '.join(self.argv)}"


@dataclass(frozen=True)
class PullFrontend(Action):
    """The frontend's own image on the host (pulled unless it is there), and for a static
    frontend its files copied out into frontends/<name>, with the checks of a release."""

    image: str
    runtime: str
    pull: bool
    digest: str | None = None
    dest: str | None = None  # frontends/<name>; None: the image runs as a container
    image_root: str = "/app"
    static_dir: str = "frontend/dist"
    auth: Mapping[str, str] | None = field(default=None, repr=False, compare=False)  # as LoadImage's
    phase: Phase = field(default=Phase.STAGE, init=False)
    kind: ClassVar[str] = "pull_frontend"
    label: ClassVar[str] = "frontend-image"

    @property
    def target(self) -> str:
        return self.dest or self.image


@dataclass(frozen=True)
class PruneFrontend(Action):
    """Delete a static frontend folder no state uses any more, and the image it came from
    (which the folder names, unless another folder came from it too)."""

    path: str
    runtime: str
    phase: Phase = field(default=Phase.PRUNE, init=False)
    kind: ClassVar[str] = "prune_frontend"
    label: ClassVar[str] = "prune"

    @property
    def target(self) -> str:
        return self.path


@dataclass(frozen=True)
class WriteFile(Action):
    path: str
    content: str
    mode: int = 0o644
    owner: str | None = None
    group: str | None = None
    secret: bool = False  # content is never shown, only that it changed
    backup: bool = False  # keep a dated copy of what it replaces (adopting a host set up by hand)
    kind: ClassVar[str] = "write_file"
    label: ClassVar[str] = "write"

    @property
    def target(self) -> str:
        return self.path


@dataclass(frozen=True)
class RemoveFile(Action):
    path: str
    backup: bool = False  # keep a dated copy (a file the reconciler did not write)
    phase: Phase = field(default=Phase.RETIRE, init=False)
    kind: ClassVar[str] = "remove_file"
    label: ClassVar[str] = "remove"

    @property
    def target(self) -> str:
        return self.path


@dataclass(frozen=True)
class DaemonReload(Action):
    unless_clean: tuple[str, ...] = ()  # skipped when systemd has all of these loaded as on disk
    phase: Phase = field(default=Phase.DAEMON_RELOAD, init=False)
    kind: ClassVar[str] = "daemon_reload"
    label: ClassVar[str] = "daemon-reload"

    @property
    def target(self) -> str:
        return "systemd"


@dataclass(frozen=True)
class SetSymlink(Action):
    path: str
    target_path: str  # what the link will point to (relative to the link's folder)
    phase: Phase = field(default=Phase.SWITCH, init=False)
    kind: ClassVar[str] = "set_symlink"
    label: ClassVar[str] = "symlink"

    @property
    def target(self) -> str:
        return f"{self.path} -> {self.target_path}"

    def wire(self) -> dict[str, Any]:
        out = {"kind": self.kind, "path": self.path, "target": self.target_path}
        return dict(out, on_failure=self.on_failure)


# When a unit operation runs, unless moved with `at()`: units start before the proxy points
# at them and stop only after it has stopped pointing at them.
_VERB_PHASE = {
    "start": Phase.START,
    "enable": Phase.START,
    "reenable": Phase.START,
    "restart": Phase.RESTART,
    "stop": Phase.RETIRE,
    "disable": Phase.RETIRE,
}


@dataclass(frozen=True)
class Systemctl(Action):
    verb: str  # start | restart | stop | enable | disable | reenable
    unit: str
    # Skipped when the unit is active and its process's environment has these values: lets a
    # rollback planned before the failure restart only what the failure disturbed.
    unless_runs: Mapping[str, str] | None = None
    kind: ClassVar[str] = "systemctl"

    def __post_init__(self) -> None:
        object.__setattr__(self, "phase", _VERB_PHASE.get(self.verb, Phase.WRITE))

    @property
    def target(self) -> str:
        return self.unit

    def summary(self) -> dict[str, str]:
        return {"action": self.verb, "target": self.unit, "reason": self.reason}


@dataclass(frozen=True)
class CheckHealth(Action):
    """The health gate. When it passes the agent records which process passed (its
    invocation) and what it runs; that record, not this run, is what later runs trust."""

    url: str
    unit: str | None
    timeout: float
    interval: float
    passes: int
    stable: float = 0.0  # the passing streak must last this long, same process throughout
    expect_version: str | None = None
    version_at: Mapping[str, str] | None = None  # where the answer names it; None: anywhere
    any_status: bool = False  # a dev server is up when it answers at all (< 500)
    unless_gated: bool = False  # skipped when the running process passed already
    idle: bool = False  # the unit serves nothing: a failure stops it (plan/policy.py)
    quarantine: Mapping[str, str] | None = None  # {key, version}: what a failing idle gate marks
    phase: Phase = field(default=Phase.VERIFY, init=False)
    kind: ClassVar[str] = "check_health"
    label: ClassVar[str] = "health-check"

    @property
    def target(self) -> str:
        return self.url

    def params(self) -> GateParams:
        return GateParams(
            self.url,
            self.timeout,
            self.interval,
            self.passes,
            self.stable,
            self.expect_version,
            self.any_status,
            self.version_at,
        )

    @classmethod
    def from_params(cls, reason: str, unit: str, p: GateParams, **kw: Any) -> CheckHealth:
        return cls(
            reason,
            url=p.url,
            unit=unit,
            timeout=p.timeout,
            interval=p.interval,
            passes=p.passes,
            stable=p.stable,
            expect_version=p.expect_version,
            version_at=p.version_at,
            any_status=p.any_status,
            **kw,
        )


@dataclass(frozen=True)
class WriteCaddyfile(Action):
    """Write (or, content None, remove) a Caddy file, then validate the whole configuration
    from the main Caddyfile, under the host-wide lock; an invalid result is undone at once, and
    so is one whose real upstreams include one of the app's units without a gate record."""

    path: str
    content: str | None
    main: str  # the main Caddyfile: what Caddy loads, and what is validated
    # The app's units by the port they listen on ("8081" -> unit): how the agent maps the
    # upstreams of the whole configuration, as Caddy adapts it, to units whose gates it checks.
    ports: Mapping[str, str] = field(default_factory=dict)
    backup: bool = False  # keep a dated copy of what it replaces
    phase: Phase = field(default=Phase.PROXY, init=False)
    kind: ClassVar[str] = "write_caddyfile"
    label: ClassVar[str] = "validate+write"

    @property
    def target(self) -> str:
        return self.path


@dataclass(frozen=True)
class LoadCaddy(Action):
    """Make Caddy run the files on disk: the agent starts it if it is down when the step runs,
    else reloads it gracefully, and checks afterwards (asking Caddy) that it runs the app's
    fragment as written. Before loading, the agent checks the gates of every unit of the app
    that the configuration routes to. On refusal the files this apply wrote are put back."""

    path: str  # the main Caddyfile
    unit: str
    fragment: str  # the app's own fragment
    app: str  # whose fragment mark the agent reads back from Caddy
    ports: Mapping[str, str] = field(default_factory=dict)  # as WriteCaddyfile's
    unless_loaded: bool = False  # skipped when Caddy runs this very fragment already
    phase: Phase = field(default=Phase.PROXY, init=False)
    kind: ClassVar[str] = "load_caddy"

    @property
    def target(self) -> str:
        return self.unit

    def summary(self) -> dict[str, str]:
        return {"action": "reload", "target": self.unit, "reason": self.reason}


@dataclass(frozen=True)
class PruneRelease(Action):
    """Delete an old release: renamed aside first, so it is never seen half-deleted."""

    version: str
    releases: str
    state: str
    image: str | None = None  # the release's image, removed with it
    runtime: str | None = None  # whose image it is
    phase: Phase = field(default=Phase.PRUNE, init=False)
    kind: ClassVar[str] = "prune_release"
    label: ClassVar[str] = "prune"

    @property
    def target(self) -> str:
        return f"{self.releases}/{self.version}"


@dataclass(frozen=True)
class SnapshotDatabase(Action):
    """SQLite's online backup of the live database: consistent even while the app writes."""

    database: str
    snapshot: str
    phase: Phase = field(default=Phase.SNAPSHOT, init=False)
    kind: ClassVar[str] = "snapshot_database"
    label: ClassVar[str] = "snapshot"

    @property
    def target(self) -> str:
        return f"{self.database} -> {self.snapshot}"


@dataclass(frozen=True)
class RestoreDatabase(Action):
    """Stop the units that use the database, then copy the snapshot back (online backup API)."""

    database: str
    snapshot: str
    units: tuple[str, ...]
    only_if_taken: bool = False  # a rollback restores only the snapshot its own deploy took
    phase: Phase = field(default=Phase.RESTORE, init=False)
    kind: ClassVar[str] = "restore_database"
    label: ClassVar[str] = "restore"

    @property
    def target(self) -> str:
        return f"{self.snapshot} -> {self.database}"


@dataclass(frozen=True)
class RecordQuarantine(Action):
    key: str  # the configuration fingerprint
    version: str
    why: str = ""
    clear: bool = False
    phase: Phase = field(default=Phase.RECORD, init=False)
    kind: ClassVar[str] = "record_quarantine"

    @property
    def target(self) -> str:
        return f"{self.version} ({self.key})"

    def summary(self) -> dict[str, str]:
        verb = "unquarantine" if self.clear else "quarantine"
        return {"action": verb, "target": self.target, "reason": self.reason}


@dataclass(frozen=True)
class RecordMaintenance(Action):
    """`reconcile maintenance on|off`: recorded on the host (who, when, why); while it is on,
    the app's Caddy fragment answers 503, as with proxy.maintenance."""

    on: bool
    why: str = ""
    by: str = ""
    phase: Phase = field(default=Phase.RECORD, init=False)
    kind: ClassVar[str] = "record_maintenance"

    @property
    def target(self) -> str:
        return "maintenance"

    def summary(self) -> dict[str, str]:
        return {
            "action": "maintenance on" if self.on else "maintenance off",
            "target": "",
            "reason": self.reason,
        }


@dataclass(frozen=True)
class RecordHold(Action):
    """`reconcile rollback`: record on the host that it is held at a good state by hand (who,
    when, why, from which release, what the desired file named then); `hold` None ends it."""

    hold: Mapping[str, Any] | None
    phase: Phase = field(default=Phase.RECORD, init=False)
    kind: ClassVar[str] = "record_hold"

    @property
    def target(self) -> str:
        return str(self.hold["version"]) if self.hold else "hold"

    def summary(self) -> dict[str, str]:
        verb = "hold" if self.hold else "end-hold"
        return {"action": verb, "target": self.target, "reason": self.reason}


@dataclass(frozen=True)
class RecordGood(Action):
    """Record the state now serving as the last good one. The agent refuses unless every unit
    in it passed its gate with this configuration, and reads the files back from the host."""

    config: str
    version: str
    image: str | None
    strategy: str
    files: tuple[str, ...]  # unit files and environment files (the Caddyfile is apart)
    links: tuple[str, ...]
    gates: Mapping[str, GateParams]
    caddyfile: str
    phase: Phase = field(default=Phase.RECORD, init=False)
    kind: ClassVar[str] = "record_good"
    label: ClassVar[str] = "record-good"

    @property
    def target(self) -> str:
        return self.version


@dataclass(frozen=True)
class Rollback:
    """What the agent does, under the same lock, when an action with on_failure rollback or
    quarantine fails: back to the host's recorded last good state."""

    actions: tuple[Action, ...]
    to: str | None  # the version it restores (None: nothing recorded to go back to)
    quarantine_key: str
    quarantine_version: str

    def wire(self) -> dict[str, Any]:
        return {
            "actions": [a.wire() for a in self.actions],
            "to": self.to,
            "quarantine": {"key": self.quarantine_key, "version": self.quarantine_version},
        }


@dataclass(frozen=True)
class Plan:
    """An ordered list of actions, plus what stops it from being applied at all."""

    actions: tuple[Action, ...]
    fingerprint: str  # of the observation the plan was made from
    blockers: tuple[str, ...] = ()  # host problems the user must fix first
    quarantined: str | None = None  # the desired configuration failed before; why
    held: str | None = None  # `reconcile rollback` holds the host at a good state: the hold
    rollback: Rollback | None = None
    config: str = ""  # the desired configuration's fingerprint
    adopting: tuple[str, ...] = ()  # files written by someone else, replaced with a backup kept

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    def summaries(self) -> list[dict[str, str]]:
        return [a.summary() for a in self.actions]

    def steps(self, phase: str | None) -> tuple[Action, ...]:
        """The actions an agent event's index refers to: the plan's, or its rollback's."""
        if phase == "rollback":
            return self.rollback.actions if self.rollback else ()
        return self.actions
