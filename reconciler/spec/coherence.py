"""Fields that must agree with each other, and settings that do nothing.

The database: `data.sqlite` tells the reconciler which file to snapshot and restore, while the
app opens the file its environment names (DATABASE_PATH, or a sqlite: DATABASE_URL). The app's
setting is the truth the reconciler cannot change, so when both are given and name different
files, data.sqlite is refused: snapshots of a file the app never writes would protect nothing.

Settings that do nothing (a blue_green block under another strategy, dev_command in static
mode, ...) are warnings: the file is used, but whoever wrote the setting expected an effect.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from typing import Any

from reconciler.errors import InputProblem
from reconciler.spec.hosts import entries
from reconciler.spec.secrets import interpolate, references
from reconciler.spec.yaml_source import Path_, SourceDoc

DATABASE_VARS = ("DATABASE_PATH", "DATABASE_URL")


def _get(data: Any, *path: str) -> Any:
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _env_blocks(doc: SourceDoc) -> Iterator[tuple[Path_, str, dict[str, Any]]]:
    """Every env mapping of the file: the top-level one, then each host's overrides."""
    top = _get(doc.data, "env")
    if isinstance(top, dict):
        yield ("env",), "env", top
    for path, _group, entry in entries(_get(doc.data, "target")):
        env = entry.get("env") if isinstance(entry, dict) else None
        if isinstance(env, dict):
            name = entry.get("name") or entry.get("target")
            yield (*path, "env"), f"host {name}'s env", env


def _text(spec: Any, environ: Mapping[str, str], offline: bool) -> tuple[str | None, bool]:
    """(the value if it can be known without reading a secret file, whether it is secret)."""
    if isinstance(spec, str):
        if references(spec) and offline:
            return None, True
        value, used, missing = interpolate(spec, environ)
        return (None, True) if missing else (value, used)
    if isinstance(spec, dict) and isinstance(spec.get("value"), str):
        return spec["value"], bool(spec.get("secret", False))
    if isinstance(spec, dict) and isinstance(spec.get("from_env"), str) and not offline:
        return environ.get(spec["from_env"]), bool(spec.get("secret", True))
    return None, True  # from_file, from_age: a database path there is not worth a secret read


def sqlite_file(var: str, value: str) -> str | None:
    """The database file a DATABASE_PATH, or a sqlite: DATABASE_URL (sqlx's sqlite:path and
    sqlite://path, SQLAlchemy's sqlite:////abs/path), names; None for other databases."""
    if var == "DATABASE_PATH":
        return value or None
    if not value.startswith("sqlite:"):
        return None
    rest = value[len("sqlite:") :].split("?", 1)[0]
    rest = rest[2:] if rest.startswith("//") else rest
    if not rest or "memory" in rest:
        return None
    return "/" + rest.lstrip("/") if rest.startswith("/") else rest


def database_problems(doc: SourceDoc, environ: Mapping[str, str], *, offline: bool) -> list[InputProblem]:
    sqlite = _get(doc.data, "data", "sqlite")
    app = _get(doc.data, "app") if isinstance(_get(doc.data, "app"), str) else "APP"
    out: list[InputProblem] = []
    for at, label, env in _env_blocks(doc):
        for var in DATABASE_VARS:
            if var not in env:
                continue
            value, secret = _text(env[var], environ, offline)
            file = sqlite_file(var, value) if value is not None else None
            if file is None:
                continue
            if not file.startswith("/"):
                out.append(
                    doc.problem(
                        (*at, var),
                        "names a relative path: the backend runs in its release folder, so the "
                        "database would live inside the release and be left behind by the next deploy",
                        f"use an absolute path such as /var/lib/{app}/{app}.db (systemd gives the "
                        f"backend /var/lib/{app}/)",
                        warning=True,
                    )
                )
                continue
            if not isinstance(sqlite, str) or posixpath.normpath(file) == posixpath.normpath(sqlite):
                continue
            mark = doc.mark_of((*at, var))
            where = f"env.{var}" if label == "env" else f"{var} in {label}"
            line = f" (line {mark[0]})" if mark else ""
            shown = "another file (a secret value, not shown)" if secret else file
            out.append(
                doc.problem(
                    ("data", "sqlite"),
                    f"names {sqlite}, but {where}{line} names {shown}: the app opens the file its "
                    "environment names, so snapshots and restores would miss its data",
                    f"make data.sqlite and {var} the same file",
                )
            )
    return out


def _hosts(doc: SourceDoc) -> int:
    return sum(1 for _ in entries(_get(doc.data, "target")))


def ineffective(doc: SourceDoc) -> list[InputProblem]:
    """Warnings for settings that do nothing with the rest of the file as it is."""
    data: dict[str, Any] = doc.data if isinstance(doc.data, dict) else {}
    out: list[InputProblem] = []

    def warn(path: Path_, message: str, hint: str) -> None:
        out.append(doc.problem(path, message, hint, warning=True))

    strategy = data.get("strategy", "symlink-swap")
    if isinstance(data.get("blue_green"), dict) and strategy != "blue-green":
        default = " (the default)" if "strategy" not in data else ""
        warn(
            ("blue_green",),
            f"only applies to strategy blue-green; this file's strategy is {strategy}{default}",
            "remove the blue_green block, or set strategy: blue-green",
        )
    frontend: dict[str, Any] = data["frontend"] if isinstance(data.get("frontend"), dict) else {}
    mode = frontend.get("mode", "static")
    default_mode = " (the default)" if "mode" not in frontend else ""
    if mode == "static":
        for key in ("dev_command", "dev_port"):
            if key in frontend:
                warn(
                    ("frontend", key),
                    f"only applies in dev-server mode; frontend.mode is static{default_mode}",
                    "remove it, or set frontend.mode: dev-server",
                )
    if mode == "dev-server":
        if "static_dir" in frontend:
            warn(
                ("frontend", "static_dir"),
                "only applies in static mode; frontend.mode is dev-server",
                "remove it, or set frontend.mode: static",
            )
        if isinstance(_get(data, "proxy", "maintenance_page"), str):
            warn(
                ("proxy", "maintenance_page"),
                "is served from the static frontend; in dev-server mode the plain maintenance page is shown",
                "remove it, or set frontend.mode: static",
            )
    health: dict[str, Any] = data["health"] if isinstance(data.get("health"), dict) else {}
    if health.get("version_at") is not None and health.get("expect_version") is False:
        warn(
            ("health", "version_at"),
            "says where the answer names the version, and health.expect_version is false: it is "
            "not looked at",
            "remove it, or set health.expect_version: true",
        )
    db: dict[str, Any] = data["data"] if isinstance(data.get("data"), dict) else {}
    if db.get("restore_on_rollback") is True and db.get("snapshot") is False:
        warn(
            ("data", "restore_on_rollback"),
            "restores the snapshots data.snapshot takes, and data.snapshot is false: there is nothing "
            "to restore",
            "set data.snapshot: true, or remove restore_on_rollback",
        )
    release: dict[str, Any] = data["release"] if isinstance(data.get("release"), dict) else {}
    if "sha256" in release and "image" in release and "source" not in release:
        warn(
            ("release", "sha256"),
            "checks the artifact in release.source; a pulled image has none",
            "pin the image with release.digest instead",
        )
    tasks = release.get("tasks")
    if (
        isinstance(tasks, dict)
        and "timeout" in tasks
        and not (tasks.get("before_switch") or tasks.get("after_switch"))
    ):
        warn(
            ("release", "tasks", "timeout"),
            "no tasks are listed, so there is nothing to time out",
            "list commands under before_switch or after_switch, or remove tasks",
        )
    if isinstance(data.get("rollout"), dict) and _hosts(doc) == 1:
        warn(
            ("rollout",),
            "only applies to several hosts; target names one",
            "remove it, or list the hosts under target",
        )
    return out
