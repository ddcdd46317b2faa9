"""Pass 3 of loading a desired state: what a schema cannot say.

Commands that need a shell, ports that collide with each other or with Caddy, `..` in a
version or a program path, fields that only mean something together, and what blue-green
needs. Values of the wrong type are skipped here: the schema pass reports those.
"""

from __future__ import annotations

import shlex
from typing import Any

from reconciler.errors import InputProblem
from reconciler.spec.yaml_source import Path_, SourceDoc, dotted

# Characters that mean something to a shell but nothing to systemd's ExecStart: accepting
# them would run a different command than the user thinks, so they are refused.
SHELL_ONLY = set(";|&<>`$")


def parse_command(text: str) -> tuple[list[str] | None, str | None]:
    """Split a command line like a shell would split words, refusing shell-only syntax."""
    bad = sorted({c for c in text if c in SHELL_ONLY})
    if bad:
        return None, (
            f"contains {' '.join(repr(c) for c in bad)}: commands run without a shell, so shell "
            "syntax does not work here; put it in a script inside the release"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return None, "contains a control character or line break"
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        return None, f"cannot split into words: {exc}"
    if not argv:
        return None, "is empty"
    head = argv[0]
    if ".." in head.split("/"):
        return None, f"program path {head!r} contains '..'; name a file inside the release"
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
                problems.append(doc.problem(path, why))
    problems.extend(_port_problems(doc))
    problems.extend(_strategy_problems(doc))
    problems.extend(_release_problems(doc))
    return problems


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
    wanted: list[tuple[tuple[str, ...], object]] = [(("backend", "port"), backend_port)]
    if _get(doc.data, "strategy") == "blue-green" and isinstance(backend_port, int):
        for colour, offset in (("blue", 1), ("green", 2)):
            port = _get(doc.data, "blue_green", f"{colour}_port")
            wanted.append((("blue_green", f"{colour}_port"), backend_port + offset if port is None else port))
    if _get(doc.data, "frontend", "mode") == "dev-server":
        wanted.append((("frontend", "dev_port"), _get(doc.data, "frontend", "dev_port")))
    out: list[InputProblem] = []
    for path, port in wanted:
        if not isinstance(port, int):
            continue
        if port in taken:
            out.append(doc.problem(path, f"port {port} is already used by {taken[port]}"))
        else:
            taken[port] = dotted(path)
    return out


def _release_problems(doc: SourceDoc) -> list[InputProblem]:
    release = _get(doc.data, "release")
    if not isinstance(release, dict):
        return []
    out = []
    if "source" not in release and "image" not in release:
        out.append(doc.problem(("release",), "give `source` (a release folder or .tar.gz) or `image`"))
    frontend = _get(doc.data, "frontend")
    frontend = frontend if isinstance(frontend, dict) else {}
    dev_server = frontend.get("mode") == "dev-server"
    if "image" in release and dev_server and "image" not in frontend:
        out.append(
            doc.problem(
                ("frontend", "mode"),
                "an image release serves its frontend statically; dev-server mode needs a release "
                "folder, or the dev server's own image in frontend.image",
            )
        )
    for key in ("digest", "image_root", "runtime"):
        if key in release and "image" not in release:
            out.append(doc.problem(("release", key), "only means something together with release.image"))
    for key in ("digest", "image_root"):
        if key in frontend and "image" not in frontend:
            out.append(doc.problem(("frontend", key), "only means something together with frontend.image"))
    if "image" in frontend and "image" not in release:
        out.append(
            doc.problem(
                ("frontend", "image"),
                "a frontend image needs a container runtime on the host: "
                "give the backend's release.image too",
            )
        )
    pulled = ("image" in release and "source" not in release) or "image" in frontend
    if _get(doc.data, "registry_auth") is not None and not pulled:
        out.append(
            doc.problem(("registry_auth",), "only means something for an image pulled from a registry")
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
                "blue-green runs two backends on two ports: write {port} where the port goes, "
                "e.g. `bin/backend --port {port}`",
            )
        )
    if _get(doc.data, "data", "restore_on_rollback") is True:
        out.append(
            doc.problem(
                ("data", "restore_on_rollback"),
                "blue-green's two colours share the database, so restoring it under the warm one is "
                "refused; snapshots still work",
            )
        )
    if _get(doc.data, "frontend", "mode") == "dev-server":
        out.append(
            doc.problem(
                ("frontend", "mode"),
                "blue-green switches the static frontend together with the backend; dev-server mode "
                "is for development hosts: use strategy restart or symlink-swap there",
            )
        )
    return out
