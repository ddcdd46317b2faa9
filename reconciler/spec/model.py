"""The desired state as immutable values: what the rest of the reconciler plans from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from reconciler.errors import InputProblem

Strategy = Literal["restart", "symlink-swap", "blue-green"]
FrontendMode = Literal["static", "dev-server"]
Runtime = Literal["podman", "docker"]


@dataclass(frozen=True)
class Target:
    """`local`, or an SSH destination as written (user/port None = ask ~/.ssh/config)."""

    kind: Literal["local", "ssh"]
    host: str = ""
    user: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        if self.kind == "local":
            return "local"
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"ssh://{user}{self.host}{port}"


@dataclass(frozen=True)
class HostSpec:
    """One host of the desired state: where it is, what it is called, its env overrides."""

    name: str
    target: Target
    group: str | None = None
    env: tuple[EnvVar, ...] = ()  # the whole env for this host, overrides already applied


@dataclass(frozen=True)
class Rollout:
    max_unavailable: int | str = 1  # hosts at once, or "25%"
    max_failed: int = 0
    concurrency: int = 8

    def batch_size(self, hosts: int) -> int:
        if isinstance(self.max_unavailable, str):
            return max(1, hosts * int(self.max_unavailable.rstrip("%")) // 100)
        return max(1, self.max_unavailable)


@dataclass(frozen=True)
class Tasks:
    """Commands run once per release and configuration: migrations before traffic moves,
    anything else once the new release serves."""

    before_switch: tuple[tuple[str, ...], ...] = ()
    after_switch: tuple[tuple[str, ...], ...] = ()
    timeout: float = 600.0


@dataclass(frozen=True)
class Release:
    version: str
    source: Path | None  # absolute, on the machine that runs the reconciler; None: pull `image`
    sha256: str | None = None
    keep: int = 5
    image: str | None = None  # run from this container image instead of a folder
    digest: str | None = None  # for a pulled image
    image_root: str = "/app"  # where the release lives inside the image
    tasks: Tasks = Tasks()
    runtime: Runtime | None = None  # None: whichever the host has (Podman first)


@dataclass(frozen=True)
class Backend:
    command: tuple[str, ...]  # argv; argv[0] already made absolute when it lives in the release
    port: int
    health: str = "/health"
    user: str | None = None
    stop_timeout: float = 20.0
    stop_signal: str = "SIGTERM"


@dataclass(frozen=True)
class Frontend:
    mode: FrontendMode = "static"
    static_dir: str = "frontend/dist"
    dev_command: tuple[str, ...] = ()
    dev_port: int | None = None
    image: str | None = None  # the frontend's own image (static files, or the dev server)
    digest: str | None = None
    image_root: str = "/app"
    # Static mode: what Caddy does with the files (no process runs them; see render/caddyfile).
    spa: bool = False  # a missing file is answered with /index.html: client-side routes reload
    immutable_paths: tuple[str, ...] = ("/assets/*",)  # fingerprinted: cached for a year


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for pulling images; both values are secret and reach the host only for
    the pull (see reconciler/agent/registry.py)."""

    username: str = field(repr=False)
    password: str = field(repr=False)
    names: tuple[str, ...] = ()  # where they came from (${NAME}s), for plans and logs


@dataclass(frozen=True)
class Health:
    timeout: float = 30.0
    interval: float = 0.25
    passes: int = 2
    stable: float = 1.0
    expect_version: bool = True
    # Where the answer names the version: ("json", "a.b") or ("header", "X-App-Version");
    # None: anywhere (see reconciler/agent/version.py).
    version_at: tuple[str, str] | None = None


@dataclass(frozen=True)
class BlueGreen:
    blue_port: int
    green_port: int
    idle: Literal["warm", "stop"] = "warm"

    def port(self, colour: str) -> int:
        return self.blue_port if colour == "blue" else self.green_port


@dataclass(frozen=True)
class Data:
    """The app's SQLite database: snapshot before a switch, restore on the way back."""

    sqlite: str | None = None
    snapshot: bool = True
    restore_on_rollback: bool = False


@dataclass(frozen=True)
class Proxy:
    site: str = ":80"
    backend_paths: tuple[str, ...] = ("/api/*",)  # Caddy path patterns sent to the backend
    private_paths: tuple[str, ...] = ()  # answered 404 through the site
    caddyfile: str = "/etc/caddy/Caddyfile"  # the main one; the app owns only its fragment
    maintenance: bool = False
    maintenance_page: str | None = None  # inside the release's static folder

    @property
    def apps_dir(self) -> str:
        return f"{self.caddyfile.rsplit('/', 1)[0]}/apps"

    def fragment(self, app: str) -> str:
        return f"{self.apps_dir}/{app}.caddy"

    def maintenance_flag(self, app: str) -> str:
        """While this file exists the app's site answers 503 (see render/caddyfile.py)."""
        return f"{self.apps_dir}/{app}.maintenance"


EVENTS = ("deploy", "rollback", "failure", "quarantine", "drift_corrected", "backoff", "gave_up", "held")


@dataclass(frozen=True)
class Webhook:
    """Where `notify:` posts events. The URL (it may carry a token, as Slack's do) and the
    header's value are never printed: logs and the host's history name the webhook by
    `label` only."""

    url: str = field(repr=False)
    label: str  # "webhook 1 (hooks.example.com)"
    header: tuple[str, str] | None = field(default=None, repr=False)  # (name, secret value)
    format: Literal["json", "slack"] = "json"
    events: frozenset[str] = frozenset(EVENTS)
    timeout: float = 5.0  # seconds per attempt
    retries: int = 3  # attempts after the first, with backoff


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str
    secret: bool = False


@dataclass(frozen=True)
class Layout:
    """Where things live on the host. Every path is absolute and already validated."""

    root: str  # /opt/<app>
    state: str  # /var/lib/reconciler/<app>
    env_file: str  # /etc/<app>/backend.env
    units: str  # /etc/systemd/system

    @property
    def releases(self) -> str:
        return f"{self.root}/releases"

    @property
    def current(self) -> str:
        return f"{self.root}/current"

    @property
    def previous(self) -> str:
        return f"{self.root}/previous"

    def release_dir(self, version: str) -> str:
        return f"{self.releases}/{version}"

    @property
    def shared(self) -> str:
        return f"{self.root}/shared"


@dataclass(frozen=True)
class DesiredState:
    file: Path
    app: str
    target: Target  # the first (often only) host's target
    release: Release
    strategy: Strategy
    blue_green: BlueGreen
    backend: Backend
    frontend: Frontend
    health: Health
    proxy: Proxy
    env: tuple[EnvVar, ...]
    layout: Layout
    hosts: tuple[HostSpec, ...] = ()
    rollout: Rollout = Rollout()
    data: Data = Data()
    shared: tuple[str, ...] = ()  # folders kept once under <root>/shared, linked into releases
    notify: tuple[Webhook, ...] = ()
    registry_auth: RegistryAuth | None = None
    # Where each field was written (path -> 1-based line, column), so a problem found later
    # (an artifact at upload time, a --limit) is located like the loader's.
    marks: Mapping[tuple[str | int, ...], tuple[int, int]] = field(
        default_factory=dict, compare=False, repr=False
    )
    # Settings that do nothing, found by the loader: reported, never refused.
    warnings: tuple[InputProblem, ...] = field(default=(), compare=False, repr=False)

    def problem(
        self, field: str | tuple[str | int, ...], message: str, hint: str = "", *, warning: bool = False
    ) -> InputProblem:
        """A problem with a field (dotted, or a path), at the field or the nearest mapping
        that holds it."""
        path: tuple[str | int, ...] = tuple(field.split(".")) if isinstance(field, str) else field
        shown = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        while path and path not in self.marks:
            path = path[:-1]
        mark = self.marks.get(path)
        line, column = (mark[0], mark[1]) if mark else (None, None)
        severity = "warning" if warning else "error"
        return InputProblem(str(self.file), line, column, shown, message, hint, severity)

    @property
    def is_fleet(self) -> bool:
        return len(self.hosts) > 1

    def for_host(self, host: HostSpec) -> DesiredState:
        """The desired state of one host: its target and its env."""
        return replace(self, target=host.target, env=host.env, hosts=(host,))

    @property
    def backend_unit(self) -> str:
        return f"{self.app}-backend.service"

    @property
    def frontend_unit(self) -> str:
        return f"{self.app}-frontend.service"

    def colour_unit(self, colour: str) -> str:
        return f"{self.app}-backend-{colour}.service"

    def colour_link(self, colour: str) -> str:
        return f"{self.layout.root}/{colour}"

    @property
    def frontends(self) -> str:
        """Static frontends copied out of frontend.image, one folder per image."""
        return f"{self.layout.root}/frontends"

    def colour_env_file(self, colour: str) -> str:
        """Each colour has its own environment file, so configuring the idle colour never
        touches what the live one would read on a restart."""
        stem, dot, ext = self.layout.env_file.rpartition(".")
        if not dot or "/" in ext:
            return f"{self.layout.env_file}-{colour}"
        return f"{stem}-{colour}.{ext}"
