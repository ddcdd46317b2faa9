"""desired-state.yaml -> DesiredState, or every problem with the file at once.

Three passes, each reported with file:line:column and the field:
1. YAML: syntax, encoding, duplicate keys, alias bombs (yaml_source);
2. the JSON Schema in schemas/ (types, required fields, unknown fields, patterns);
3. checks a schema cannot express (commands, ports that collide, `..` in a version).
Nothing here touches the network or the host.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any, cast

from reconciler.errors import InputProblem, InvalidDesiredState
from reconciler.spec import notify, secrets, yaml_source
from reconciler.spec.age import AgeFiles
from reconciler.spec.hosts import resolve_hosts
from reconciler.spec.model import (
    Backend,
    BlueGreen,
    Data,
    DesiredState,
    EnvVar,
    Frontend,
    Health,
    HostSpec,
    Layout,
    Proxy,
    RegistryAuth,
    Release,
    Rollout,
    Strategy,
    Tasks,
    Webhook,
)
from reconciler.spec.yaml_source import Path_, SourceDoc, dotted

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema" / "desired-state.schema.json"

# Characters that mean something to a shell but nothing to systemd's ExecStart: accepting
# them would run a different command than the user thinks, so they are refused.
SHELL_ONLY = set(";|&<>`$")


def _verbatim(path: Path_) -> bool:
    """release.version and env values (top-level or a host's) keep the text as written."""
    if path == ("release", "version") or (path and path[0] == "registry_auth"):
        return True
    if "env" not in path:
        return False
    after = len(path) - path.index("env") - 1
    return after == 1 or (after == 2 and path[-1] == "value")


@cache
def schema() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


def load(
    file: Path | str, *, target_override: str | None = None, cache_dir: Path | None = None
) -> DesiredState:
    """Load and check a desired-state file; raise InvalidDesiredState listing every problem.

    With `cache_dir`, bytes that passed the schema once skip it next time (see
    schema_problems_cached); the caller decides whether that folder may be written."""
    path = Path(file)
    shown = str(file)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InvalidDesiredState(
            [InputProblem(shown, None, None, "", "no such file; pass the desired state with -f FILE")]
        ) from None
    except OSError as exc:
        raise InvalidDesiredState(
            [InputProblem(shown, None, None, "", f"cannot read: {exc.strerror}")]
        ) from None
    return load_bytes(
        raw, shown, base_dir=path.resolve().parent, target_override=target_override, cache_dir=cache_dir
    )


def load_bytes(
    raw: bytes,
    shown: str,
    *,
    base_dir: Path,
    target_override: str | None = None,
    environ: Mapping[str, str] | None = None,
    cache_dir: Path | None = None,
) -> DesiredState:
    """`environ` feeds ${NAME} and from_env (default: this process's environment)."""
    doc = yaml_source.parse(raw, shown, verbatim=_verbatim)
    if target_override is not None and isinstance(doc.data, dict):
        doc.data["target"] = target_override
    problems = (
        schema_problems(doc)
        if cache_dir is None
        else schema_problems_cached(doc, raw, target_override, cache_dir)
    )
    if isinstance(doc.data, dict):
        problems += semantic_problems(doc)
    env: tuple[EnvVar, ...] = ()
    host_specs: tuple[HostSpec, ...] = ()
    hooks: tuple[Webhook, ...] = ()
    registry_auth: RegistryAuth | None = None
    if not problems:
        env_source = os.environ if environ is None else environ
        age = AgeFiles(env_source)
        env, env_problems = secrets.resolve_env(doc, base_dir, env_source, age=age)
        host_specs, host_problems = resolve_hosts(doc, env, base_dir, env_source, age)
        hooks, notify_problems = notify.resolve(doc, env_source)
        registry_auth, auth_problems = secrets.resolve_registry_auth(doc, base_dir, env_source, age)
        problems += env_problems + host_problems + notify_problems + auth_problems
    if problems:
        problems.sort(key=lambda p: (p.line or 0, p.column or 0, p.field))
        raise InvalidDesiredState(problems)
    return replace(build(doc.data, Path(shown), base_dir, env, host_specs, registry_auth), notify=hooks)


# --- pass 2: the schema ----------------------------------------------------------------


def _validated_key(raw: bytes, target_override: str | None) -> str:
    digest = hashlib.sha256(SCHEMA_FILE.read_bytes())
    digest.update(b"\0" + raw + b"\0" + (target_override or "").encode())
    return digest.hexdigest()


def schema_problems_cached(
    doc: SourceDoc, raw: bytes, target_override: str | None, cache_dir: Path
) -> list[InputProblem]:
    """The schema pass, skipped when these exact bytes already passed this exact schema.

    Validating is deterministic, and importing jsonschema costs more than a whole local
    no-op run should take; a marker file per (schema, file) pair that passed is enough.
    """
    marker = cache_dir / _validated_key(raw, target_override)
    if marker.exists():
        return []
    problems = schema_problems(doc)
    if not problems:
        with contextlib.suppress(OSError):
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
    return problems


def schema_problems(doc: SourceDoc) -> list[InputProblem]:
    import jsonschema  # deferred: see schema_problems_cached

    validator = jsonschema.Draft202012Validator(schema())
    problems: list[InputProblem] = []
    for err in validator.iter_errors(doc.data):
        problems.extend(_explain(doc, err))
    return _dedupe(problems)


def _dedupe(problems: list[InputProblem]) -> list[InputProblem]:
    seen: set[InputProblem] = set()
    out = []
    for p in problems:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return json.dumps(shown)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _expected(err: Any) -> str:
    sub = err.schema if isinstance(err.schema, dict) else {}
    if "x-expected" in sub:
        return str(sub["x-expected"])
    if err.validator == "enum":
        return "one of " + ", ".join(str(v) for v in err.validator_value)
    if err.validator == "type":
        return {"object": "a mapping", "array": "a list", "integer": "a whole number"}.get(
            err.validator_value, f"a {err.validator_value}"
        )
    return str(err.message)


def _explain(doc: SourceDoc, err: Any) -> list[InputProblem]:
    path: tuple[str | int, ...] = tuple(err.absolute_path)
    kind = err.validator
    if kind == "required":
        have = err.instance if isinstance(err.instance, dict) else {}
        why = " (needed in dev-server mode)" if "then" in err.schema_path else ""
        return [
            doc.problem(path, f"missing required field {name!r}{why}")
            for name in err.validator_value
            if name not in have
        ]
    if kind == "additionalProperties":
        known = sorted((err.schema.get("properties") or {}).keys())
        out = []
        for key in err.instance:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            out.append(doc.problem((*path, key), f"unknown field{hint} (allowed here: {', '.join(known)})"))
        return out
    if "propertyNames" in err.relative_schema_path:
        key = err.instance
        return [doc.problem((*path, key), f"bad name {key!r}: expected {_expected(err)}")]
    if kind == "if":
        return []  # the failing "then" branch reports the useful part
    got = _describe(err.instance)
    hint = ""
    if kind == "type" and "string" in str(err.validator_value) and isinstance(err.instance, int | float):
        hint = " (YAML read it as a number or boolean; put it in quotes)"
    return [doc.problem(path, f"expected {_expected(err)}; got {got}{hint}")]


# --- pass 3: what the schema cannot say -------------------------------------------------


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


# --- building the model -----------------------------------------------------------------


def build(
    data: dict[str, Any],
    file: Path,
    base_dir: Path,
    env: tuple[EnvVar, ...],
    hosts: tuple[HostSpec, ...],
    registry_auth: RegistryAuth | None = None,
) -> DesiredState:
    app: str = data["app"]
    rel = data["release"]
    source = Path(rel["source"]) if "source" in rel else None
    paths = data.get("paths") or {}
    layout = Layout(
        root=paths.get("root", f"/opt/{app}"),
        state=paths.get("state", f"/var/lib/reconciler/{app}"),
        env_file=paths.get("env_file", f"/etc/{app}/backend.env"),
        units=paths.get("units", "/etc/systemd/system"),
    )
    be = data["backend"]
    fe = data.get("frontend") or {}
    health = data.get("health") or {}
    proxy = data.get("proxy") or {}
    bg = data.get("blue_green") or {}
    rollout = data.get("rollout") or {}
    data_section = data.get("data") or {}
    backend_argv, _ = parse_command(be["command"])
    dev_argv, _ = parse_command(fe["dev_command"]) if fe.get("dev_command") else ([], None)
    tasks = rel.get("tasks") or {}
    return DesiredState(
        file=file,
        app=app,
        target=hosts[0].target,
        hosts=hosts,
        data=Data(
            sqlite=data_section.get("sqlite"),
            snapshot=data_section.get("snapshot", True),
            restore_on_rollback=data_section.get("restore_on_rollback", False),
        ),
        rollout=Rollout(
            max_unavailable=rollout.get("max_unavailable", 1),
            max_failed=rollout.get("max_failed", 0),
            concurrency=rollout.get("concurrency", 8),
        ),
        release=Release(
            version=rel["version"],
            source=None if source is None else source if source.is_absolute() else base_dir / source,
            sha256=rel.get("sha256"),
            keep=rel.get("keep", 5),
            image=rel.get("image"),
            digest=rel.get("digest"),
            image_root=rel.get("image_root", "/app"),
            tasks=Tasks(
                before_switch=tuple(tuple(parse_command(c)[0] or ()) for c in tasks.get("before_switch", [])),
                after_switch=tuple(tuple(parse_command(c)[0] or ()) for c in tasks.get("after_switch", [])),
                timeout=float(tasks.get("timeout", 600)),
            ),
            runtime=rel.get("runtime"),
        ),
        strategy=cast(Strategy, data.get("strategy", "symlink-swap")),
        blue_green=BlueGreen(
            blue_port=bg.get("blue_port", be["port"] + 1),
            green_port=bg.get("green_port", be["port"] + 2),
            idle=bg.get("idle", "warm"),
        ),
        backend=Backend(
            command=tuple(backend_argv or ()),
            port=be["port"],
            health=be.get("health", "/health"),
            user=be.get("user"),
            stop_timeout=float(be.get("stop_timeout", 20)),
            stop_signal=be.get("stop_signal", "SIGTERM"),
        ),
        frontend=Frontend(
            mode=fe.get("mode", "static"),
            static_dir=fe.get("static_dir", "frontend/dist"),
            dev_command=tuple(dev_argv or ()),
            dev_port=fe.get("dev_port"),
            image=fe.get("image"),
            digest=fe.get("digest"),
            image_root=fe.get("image_root", "/app"),
        ),
        health=Health(
            timeout=float(health.get("timeout", 30)),
            interval=float(health.get("interval", 0.25)),
            passes=int(health.get("passes", 2)),
            stable=float(health.get("stable", 1.0)),
            expect_version=bool(health.get("expect_version", True)),
        ),
        proxy=Proxy(
            site=proxy.get("site", ":80"),
            caddyfile=proxy.get("caddyfile", "/etc/caddy/Caddyfile"),
            maintenance=bool(proxy.get("maintenance", False)),
            maintenance_page=proxy.get("maintenance_page"),
        ),
        shared=tuple(data.get("shared") or ()),
        env=env,
        layout=layout,
        registry_auth=registry_auth,
    )
