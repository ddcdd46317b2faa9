"""systemd unit files: rendering, parsing, and deciding what a change needs.

A rendered unit carries `Environment=RECONCILER_UNIT_HASH=<h>`, a hash of only the parts of
the unit that matter to a running process. The process inherits it, so reading
/proc/<pid>/environ tells which definition the process was started from. That makes
"restart vs nothing" level-triggered: a unit written just before a crash is restarted by the
next run, and a Description-only edit (same hash) never restarts anything.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from reconciler.render.envfile import CONFIG_VAR

HASH_VAR = "RECONCILER_UNIT_HASH"
RELEASE_VAR = "RECONCILER_RELEASE"  # the release the process runs, in its own environment
HEADER = "# Managed by reconciler ({app}): edits here are reverted on the next run.\n"

# [Unit] keys that change nothing about a running process (after NixOS's switch logic).
UNIT_KEYS_WITHOUT_RESTART = frozenset(
    {
        "Description",
        "Documentation",
        "OnFailure",
        "OnSuccess",
        "OnFailureJobMode",
        "IgnoreOnIsolate",
        "StopWhenUnneeded",
        "RefuseManualStart",
        "RefuseManualStop",
        "AllowIsolate",
        "CollectMode",
        "SourcePath",
    }
)

Parsed = dict[str, list[tuple[str, str]]]


def parse(text: str) -> Parsed:
    """Sections -> ordered (key, value) pairs; comments dropped, continuations joined."""
    out: Parsed = {}
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, [])
            continue
        key, sep, value = line.partition("=")
        if sep:
            out.setdefault(section, []).append((key.strip(), value.strip()))
    return out


def _is_marker(key: str, value: str) -> bool:
    return key == "Environment" and value.startswith(HASH_VAR + "=")


def _values(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Key -> its values in order (a key may repeat, e.g. ExecStartPre); markers left out."""
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        if not _is_marker(key, value):
            out.setdefault(key, []).append(value)
    return out


def runtime_hash(text: str) -> str:
    """Hash of what a running process depends on: [Install] and metadata keys left out."""
    parsed = parse(text)
    items = []
    for section in sorted(parsed):
        if section == "Install":
            continue
        for key, values in sorted(_values(parsed[section]).items()):
            if section == "Unit" and key in UNIT_KEYS_WITHOUT_RESTART:
                continue
            items.append("\0".join((section, key, *values)))
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]


def marker_of(text: str | None) -> str | None:
    """The hash a unit file announces, if it carries our marker."""
    if text is None:
        return None
    for pairs in parse(text).values():
        for key, value in pairs:
            if _is_marker(key, value):
                return value.split("=", 1)[1]
    return None


@dataclass(frozen=True)
class UnitChange:
    """What differs between two versions of a unit file and what that requires."""

    changed: tuple[str, ...]  # "Service.ExecStart", "Unit.Description", ...
    restart: bool  # a running process must be restarted to pick it up
    reenable: bool  # [Install] changed: enablement links must be redone

    def describe(self) -> str:
        return ", ".join(self.changed) if self.changed else "formatting only"


def classify(old: str, new: str) -> UnitChange:
    """restart vs nothing from a parsed diff, ignoring comments, order of sections, markers."""
    a, b = parse(old), parse(new)
    changed = []
    restart = reenable = False
    for section in sorted(set(a) | set(b)):
        va, vb = _values(a.get(section, [])), _values(b.get(section, []))
        for key in sorted(k for k in va.keys() | vb.keys() if va.get(k) != vb.get(k)):
            changed.append(f"{section}.{key}")
            if section == "Install":
                reenable = True
            elif not (section == "Unit" and key in UNIT_KEYS_WITHOUT_RESTART):
                restart = True
    return UnitChange(tuple(changed), restart, reenable)


# --- rendering ----------------------------------------------------------------------------


def quote_arg(arg: str) -> str:
    """One ExecStart word: systemd's own quoting, with `%` and `$` made literal."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if escaped and not any(c in escaped for c in " \t\"'\\;"):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_line(argv: tuple[str, ...], workdir: str, port: int | None = None) -> str:
    """A first word with a '/' that is not absolute is a program inside the release;
    `{port}` becomes the port this instance listens on."""
    if port is not None:
        argv = tuple(w.replace("{port}", str(port)) for w in argv)
    head, *rest = argv
    if "/" in head and not head.startswith("/"):
        head = f"{workdir}/{head.removeprefix('./')}"
    return " ".join(quote_arg(w) for w in (head, *rest))


@dataclass(frozen=True)
class ServiceSpec:
    app: str
    role: str  # backend | frontend
    argv: tuple[str, ...]
    workdir: str
    env_file: str | None = None
    user: str | None = None
    state_directory: str | None = None
    port: int | None = None  # exported as PORT and substituted for {port}
    image: str | None = None  # run in this container image
    release: str | None = None  # the release version, exported as RECONCILER_RELEASE
    env_names: tuple[str, ...] = ()  # the EnvironmentFile's variables, handed on to a container
    stop_timeout: float = 20.0  # seconds between the stop signal and SIGKILL
    stop_signal: str = "SIGTERM"
    shared: tuple[tuple[str, str], ...] = ()  # (host folder, path in the container) for images
    runtime: str = "podman"  # podman | docker, for an image
    run_as: tuple[int, int] | None = None  # for an image with a user: that user's uid and gid on the host


def render_service(spec: ServiceSpec) -> str:
    if spec.image is not None:
        return render_container_service(spec)
    lines = [
        HEADER.format(app=spec.app).rstrip("\n"),
        "[Unit]",
        f"Description={spec.app} {spec.role}",
        "After=network.target",
        "",
        "[Service]",
        "Type=simple",
        f"WorkingDirectory={spec.workdir}",
        f"ExecStart={exec_line(spec.argv, spec.workdir, spec.port)}",
    ]
    if spec.release is not None:
        # The process names its release itself: what it runs is read from its environment,
        # not from its working directory, which the app may change.
        lines.append(f"Environment={RELEASE_VAR}={spec.release}")
    if spec.port is not None:
        lines.append(f"Environment=PORT={spec.port}")
    if spec.env_file:
        lines.append(f"EnvironmentFile={spec.env_file}")
    if spec.user:
        lines.append(f"User={spec.user}")
    if spec.state_directory:
        lines.append(f"StateDirectory={spec.state_directory}")
    lines += ["Restart=on-failure", "RestartSec=1s", f"TimeoutStopSec={_seconds(spec.stop_timeout)}"]
    if spec.stop_signal != "SIGTERM":
        lines.append(f"KillSignal={spec.stop_signal}")
    lines += ["", "[Install]", "WantedBy=multi-user.target"]
    body = "\n".join(lines) + "\n"
    return with_marker(body)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def with_marker(body: str) -> str:
    """Insert the runtime-hash marker as the first line of [Service]."""
    marker = f"Environment={HASH_VAR}={runtime_hash(body)}"
    out, placed = [], False
    for line in body.splitlines():
        out.append(line)
        if not placed and line.strip() == "[Service]":
            out.append(marker)
            placed = True
    if not placed:
        out += ["[Service]", marker]
    return "\n".join(out) + "\n"


PODMAN = "/usr/bin/podman"
DOCKER = "/usr/bin/docker"


def container_words(spec: ServiceSpec) -> list[str]:
    """`podman run` (or `docker run`) with what every container of the release gets, up to
    the image: the service's and its release tasks' (which run the same way, once). Docker
    takes the release from its client's environment, where the unit (or the task) sets it."""
    assert spec.image is not None
    docker = spec.runtime == "docker"
    words = [DOCKER if docker else PODMAN, "run", "--rm", "--network=host", f"--workdir={spec.workdir}"]
    if spec.user:
        words.append(f"--user={_run_as(spec)}")
    if spec.release is not None:
        words.append(f"--env={RELEASE_VAR}" if docker else f"--env={RELEASE_VAR}={spec.release}")
    if spec.env_file:
        words += [f"--env={name}" for name in (CONFIG_VAR, *spec.env_names)]
    if spec.state_directory:
        words.append(f"--volume=/var/lib/{spec.state_directory}:/var/lib/{spec.state_directory}")
    words += [f"--volume={host}:{inside}" for host, inside in spec.shared]
    return [*words, spec.image]  # without backend.user: as the image's own user (USER)


def _run_as(spec: ServiceSpec) -> str:
    """`--user` for the container: numbers, since the host's account is not in the image's
    /etc/passwd, where the runtime would look a name up."""
    if spec.run_as is None:
        raise ValueError(
            f"the container of {spec.app} {spec.role} runs as {spec.user}, whose ids are unknown"
        )
    return f"{spec.run_as[0]}:{spec.run_as[1]}"


def user_lines(spec: ServiceSpec) -> tuple[list[str], str]:
    """A container unit's lines for backend.user, and the prefix of its runtime commands.

    The unit names the user (User=), so systemd makes /var/lib/<app> (StateDirectory=) the
    user's exactly as for a release folder: created for them, handed over (the whole tree)
    when it is not theirs. A StateDirectory= without User= would hand it back to root on
    every start. The runtime's own commands keep root's privileges (`+`: rootful Podman and
    the Docker client need them) and root's HOME, not the user's: a root process reads no
    configuration from the service user's home. The container itself runs as the user's
    uid and gid (`--user`)."""
    if not spec.user:
        return [], ""
    return [f"User={spec.user}", "Environment=HOME=/root"], "+"


def render_container_service(spec: ServiceSpec) -> str:
    if spec.runtime == "docker":
        from reconciler.render.docker_unit import render_docker_service

        return render_docker_service(spec)
    return render_podman_service(spec)


def container_argv(spec: ServiceSpec) -> list[str]:
    """The command inside the container, `{port}` filled in, each word quoted for ExecStart."""
    argv = tuple(w.replace("{port}", str(spec.port)) for w in spec.argv) if spec.port else spec.argv
    return [quote_arg(w) for w in argv]


def render_podman_service(spec: ServiceSpec) -> str:
    """A unit wrapping `podman run` so systemctl, restarts and the journal work as for a folder.

    Type=notify with --sdnotify=conmon: systemd tracks conmon and the unit is "active" once the
    container runs. --init: a Python PID 1 would ignore SIGTERM. Host networking: the app binds
    127.0.0.1:PORT exactly as a folder release does, so health checks and Caddy are unchanged.
    The unit's hash and the release reach the container's environment, where the next
    observation reads them back.

    The EnvironmentFile is read by systemd (its own quoting rules) into podman's environment,
    and `--env=NAME` without a value hands each variable on unchanged: podman's own
    `--env-file` would take the quotes literally. Only names appear in the unit and in `ps`.
    """
    assert spec.image is not None
    service = [
        "--cidfile=%t/%n.ctr-id",  # cgroup handling is left to the host's containers.conf
        "--init",
        "--sdnotify=conmon",
        "--replace",
        "-d",
        "--name=%N",
        f"--env={HASH_VAR}",  # no value: podman passes on the one systemd set below
    ]
    if spec.port is not None:
        service.append(f"--env=PORT={spec.port}")
    if spec.stop_signal != "SIGTERM":
        service.append(f"--stop-signal={spec.stop_signal}")
    words = container_words(spec)
    run = [f"{words[0]} {words[1]}", *service, *words[2:], *container_argv(spec)]
    user, root = user_lines(spec)
    lines = [
        HEADER.format(app=spec.app).rstrip("\n"),
        "[Unit]",
        f"Description={spec.app} {spec.role} (container)",
        "After=network.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=all",
        *user,
        # podman 4.3's rm --cidfile leaves the file, and run refuses to start over it.
        f"ExecStartPre={root}/bin/rm -f %t/%n.ctr-id",
        f"ExecStart={root}" + " \\\n    ".join(run),
        f"ExecStop={root}{PODMAN} stop --ignore -t {int(spec.stop_timeout)} --cidfile=%t/%n.ctr-id",
        f"ExecStopPost={root}{PODMAN} rm -f --ignore --cidfile=%t/%n.ctr-id",
        "SuccessExitStatus=143",
    ]
    return with_marker("\n".join([*lines, *container_unit_end(spec)]) + "\n")


def container_unit_end(spec: ServiceSpec) -> list[str]:
    """The end of a container's unit, whichever runtime: its environment, its state folder,
    restarts, and a stop timeout that lets the runtime's own stop (the container's grace
    period) finish first."""
    lines = []
    if spec.env_file:
        lines.append(f"EnvironmentFile={spec.env_file}")
    if spec.state_directory:
        lines.append(f"StateDirectory={spec.state_directory}")
    lines += ["Restart=on-failure", "RestartSec=1s", f"TimeoutStopSec={_seconds(spec.stop_timeout + 10)}"]
    return [*lines, "", "[Install]", "WantedBy=multi-user.target"]
