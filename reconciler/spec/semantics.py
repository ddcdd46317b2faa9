"""Pass 3 of loading a desired state: what a schema cannot say.

Commands that need a shell, ports that collide with each other or with Caddy, `..` in a
version or a program path, fields that only mean something together, and what blue-green
needs. Values of the wrong type are skipped here: the schema pass reports those.
"""

from __future__ import annotations

import shlex
from typing import Any

from reconciler.errors import InputProblem
from reconciler.spec import paths
from reconciler.spec.said import Said
from reconciler.spec.yaml_source import Path_, SourceDoc, dotted

# Characters that mean something to a shell but nothing to systemd's ExecStart: accepting
# them would run a different command than the user thinks, so they are refused.
SHELL_ONLY = set(";|&<>`$")


def parse_command(text: str) -> tuple[list[str] | None, Said | None]:
    """Split a command line like a shell would split words, refusing shell-only syntax."""
    bad = sorted({c for c in text if c in SHELL_ONLY})
    if bad:
        return None, Said(
            f"contains {' '.join(repr(c) for c in bad)}: commands run without a shell, so shell "
            "syntax does not work here",
            "put it in a script inside the release",
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return None, Said("contains a control character or line break", "write the command on one line")
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        return None, Said(f"cannot split into words: {exc}", "close the quote")
    if not argv:
        return None, Said("is empty", "give the program to run and its arguments")
    head = argv[0]
    if ".." in head.split("/"):
        return None, Said(f"program path {head!r} contains '..'", "name a file inside the release")
    return argv, None


def _get(data: Any, *path: str | int) -> Any:
    """The value at `path` if every step is a mapping (or a list, for an index), else None
    (the schema reports those)."""
    for key in path:
        if isinstance(key, int):
            if not isinstance(data, list) or key >= len(data):
                return None
            data = data[key]
        elif not isinstance(data, dict):
            return None
        else:
            data = data.get(key)
    return data


def semantic_problems(doc: SourceDoc) -> list[InputProblem]:
    """Checks on values the schema accepted; fields of the wrong type are skipped."""
    problems: list[InputProblem] = []
    version = _get(doc.data, "release", "version")
    if isinstance(version, str) and ".." in version:
        problems.append(doc.problem(("release", "version"), f"{version!r} contains '..'"))
    commands: list[Path_] = [("backend", "command"), ("frontend", "dev_command")]
    for when in ("before_switch", "after_switch"):
        listed = _get(doc.data, "release", "tasks", when)
        if isinstance(listed, list):
            commands += [("release", "tasks", when, i) for i in range(len(listed))]
    for path in commands:
        text = _get(doc.data, *path)
        if isinstance(text, str):
            _argv, why = parse_command(text)
            if why:
                problems.append(doc.problem(path, why.message, why.hint))
    problems.extend(_port_problems(doc))
    problems.extend(_strategy_problems(doc))
    problems.extend(_release_problems(doc))
    problems.extend(_gate_problems(doc))
    problems.extend(_route_problems(doc))
    return problems


def _gate_problems(doc: SourceDoc) -> list[InputProblem]:
    """A gate whose stable window or number of passes cannot fit in its timeout never passes:
    every deploy would fail and roll back."""
    health = _get(doc.data, "health")
    if not isinstance(health, dict):
        return []

    def number(key: str, default: float) -> float | None:
        value = health.get(key, default)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    timeout, stable = number("timeout", 30), number("stable", 1)
    passes, interval = number("passes", 2), number("interval", 0.25)
    if timeout is None or stable is None or passes is None or interval is None:
        return []
    # Located at what was written: the timeout when it is, else the setting that needs the time.
    if stable >= timeout:
        at = ("health", "timeout") if "timeout" in health else ("health", "stable")
        return [
            doc.problem(
                at,
                f"the gate can never pass: it needs {stable:g} s of good answers (health.stable) "
                f"within a timeout of {timeout:g} s",
                "make health.timeout longer than health.stable",
                at=at if at in doc.marks else ("health",),
            )
        ]
    needs = (passes - 1) * interval
    if needs >= timeout:
        at = ("health", "timeout") if "timeout" in health else ("health", "passes")
        return [
            doc.problem(
                at,
                f"the gate can never pass: {passes:g} passes {interval:g} s apart take {needs:g} s, "
                f"more than the timeout of {timeout:g} s",
                "lower health.passes or health.interval, or make health.timeout longer",
                at=at if at in doc.marks else ("health",),
            )
        ]
    return []


def _patterns(doc: SourceDoc, *path: str) -> list[tuple[Path_, str]]:
    listed = _get(doc.data, *path)
    if not isinstance(listed, list):
        return []
    return [((*path, i), p) for i, p in enumerate(listed) if isinstance(p, str)]


def _route_problems(doc: SourceDoc) -> list[InputProblem]:
    """Path lists that would hide what must stay reachable, or cache what must not be."""
    out = []
    health = _get(doc.data, "backend", "health")
    health = health if isinstance(health, str) else "/health"
    public = {p for _, p in _patterns(doc, "proxy", "backend_paths")}
    for where, pattern in _patterns(doc, "proxy", "private_paths"):
        if paths.matches(pattern, health):
            out.append(
                doc.problem(
                    where,
                    f"{pattern} hides the health path {health}, which always reaches the backend "
                    "(monitors, and maintenance mode, rely on it); narrow or remove it",
                )
            )
        elif pattern in public:
            out.append(
                doc.problem(
                    where,
                    f"{pattern} is also in proxy.backend_paths; a private path wins, so remove it "
                    "from one list",
                )
            )
    for where, pattern in _patterns(doc, "frontend", "immutable_paths"):
        hit = next((p for p in ("/", "/index.html") if paths.matches(pattern, p)), None)
        if hit:
            out.append(
                doc.problem(
                    where,
                    f"{pattern} matches {hit}: the page that names the fingerprinted files would be "
                    "cached for a year and returning visitors would not see a deploy; list only "
                    "where the fingerprinted files are, such as /assets/*",
                )
            )
    return out


def _site_port(site: str) -> int | None:
    tail = site.rsplit(":", 1)
    if len(tail) == 2 and tail[1].isdigit():
        return int(tail[1])
    if site.startswith("https://") or "." in site.split("/", maxsplit=1)[0] or site == "localhost":
        return 443
    return 80 if site.startswith("http://") else None


def _port_problems(doc: SourceDoc) -> list[InputProblem]:
    """Every port the host will bind must be distinct, and not Caddy's."""
    site = _get(doc.data, "proxy", "site")
    site_port = _site_port(site if isinstance(site, str) else ":80")
    backend_port = _get(doc.data, "backend", "port")
    taken: dict[int, str] = {2019: "Caddy's admin endpoint"}
    if site_port:
        taken[site_port] = "the proxy site"
    # (field, its port, where it is written: a defaulted colour port is set by backend.port)
    wanted: list[tuple[tuple[str, ...], object, tuple[str, ...]]] = [
        (("backend", "port"), backend_port, ("backend", "port"))
    ]
    if _get(doc.data, "strategy") == "blue-green" and isinstance(backend_port, int):
        for colour, offset in (("blue", 1), ("green", 2)):
            path: tuple[str, ...] = ("blue_green", f"{colour}_port")
            port = _get(doc.data, *path)
            if port is None:
                wanted.append((path, backend_port + offset, ("backend", "port")))
            else:
                wanted.append((path, port, path))
    if _get(doc.data, "frontend", "mode") == "dev-server":
        dev = ("frontend", "dev_port")
        wanted.append((dev, _get(doc.data, *dev), dev))
    out: list[InputProblem] = []
    for path, port, at in wanted:
        if not isinstance(port, int):
            continue
        if port in taken:
            if at != path:
                offset = port - backend_port if isinstance(backend_port, int) else 0
                message = (
                    f"defaults to backend.port + {offset} = {port}, which is already used by {taken[port]}"
                )
                hint = f"choose another backend.port, or set {dotted(path)}"
            else:
                message, hint = f"port {port} is already used by {taken[port]}", "choose another port"
            out.append(doc.problem(path, message, hint, at=at))
        else:
            taken[port] = dotted(path)
    return out


def _release_problems(doc: SourceDoc) -> list[InputProblem]:
    release = _get(doc.data, "release")
    if not isinstance(release, dict):
        return []
    out = []
    if "source" not in release and "image" not in release:
        out.append(
            doc.problem(
                ("release", "source"),
                "no release to run",
                "give `source` (a release folder or .tar.gz) or `image`",
                at=("release",),
            )
        )
    frontend = _get(doc.data, "frontend")
    frontend = frontend if isinstance(frontend, dict) else {}
    dev_server = frontend.get("mode") == "dev-server"
    if "image" in release and dev_server and "image" not in frontend:
        out.append(
            doc.problem(
                ("frontend", "mode"),
                "an image release serves its frontend statically",
                "dev-server mode needs a release folder, or the dev server's own image in frontend.image",
            )
        )
    for key in ("digest", "image_root", "runtime"):
        if key in release and "image" not in release:
            out.append(
                doc.problem(
                    ("release", key),
                    "only means something together with release.image",
                    "remove it, or add release.image",
                )
            )
    for key in ("digest", "image_root"):
        if key in frontend and "image" not in frontend:
            out.append(
                doc.problem(
                    ("frontend", key),
                    "only means something together with frontend.image",
                    "remove it, or add frontend.image",
                )
            )
    if "image" in frontend and "image" not in release:
        out.append(
            doc.problem(
                ("frontend", "image"),
                "a frontend image needs a container runtime on the host",
                "give the backend's release.image too",
            )
        )
    pulled = ("image" in release and "source" not in release) or "image" in frontend
    if _get(doc.data, "registry_auth") is not None and not pulled:
        out.append(
            doc.problem(
                ("registry_auth",),
                "only means something for an image pulled from a registry",
                "remove it, or pull release.image (no release.source) or frontend.image",
            )
        )
    return out


def _strategy_problems(doc: SourceDoc) -> list[InputProblem]:
    if _get(doc.data, "strategy") != "blue-green":
        return []
    out = []
    command = _get(doc.data, "backend", "command")
    if isinstance(command, str) and "{port}" not in command:
        out.append(
            doc.problem(
                ("backend", "command"),
                "blue-green runs two backends on two ports, and this command names none",
                "write {port} where the port goes, e.g. `bin/backend --port {port}`",
            )
        )
    if _get(doc.data, "data", "restore_on_rollback") is True:
        out.append(
            doc.problem(
                ("data", "restore_on_rollback"),
                "blue-green's two colours share the database, so restoring it under the warm one is refused",
                "remove restore_on_rollback (snapshots still work), or use strategy symlink-swap",
            )
        )
    if _get(doc.data, "frontend", "mode") == "dev-server":
        out.append(
            doc.problem(
                ("frontend", "mode"),
                "blue-green switches the static frontend together with the backend; dev-server mode "
                "is for development hosts",
                "use strategy restart or symlink-swap there, or frontend.mode: static",
            )
        )
    return out
