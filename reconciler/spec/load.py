"""desired-state.yaml -> DesiredState, or every problem with the file at once.

Three passes, each reported with file:line:column and the field:
1. YAML: syntax, encoding, duplicate keys, alias bombs (yaml_source);
2. the JSON Schema in schemas/ (types, required fields, unknown fields, patterns; schema_check);
3. checks a schema cannot express (commands, ports that collide, `..` in a version; semantics).
Then secrets and hosts are resolved and the model is built. Nothing here touches the network
or the host.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from reconciler.errors import InputProblem, InvalidDesiredState
from reconciler.spec import notify, schema_check, secrets, yaml_source
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
from reconciler.spec.semantics import parse_command, semantic_problems
from reconciler.spec.yaml_source import Path_


def _verbatim(path: Path_) -> bool:
    """release.version and env values (top-level or a host's) keep the text as written."""
    if path == ("release", "version") or (path and path[0] == "registry_auth"):
        return True
    if "env" not in path:
        return False
    after = len(path) - path.index("env") - 1
    return after == 1 or (after == 2 and path[-1] == "value")


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
        schema_check.schema_problems(doc)
        if cache_dir is None
        else schema_check.schema_problems_cached(doc, raw, target_override, cache_dir)
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
            spa=bool(fe.get("spa", False)),
            immutable_paths=tuple(fe.get("immutable_paths", ["/assets/*"])),
        ),
        health=Health(
            timeout=float(health.get("timeout", 30)),
            interval=float(health.get("interval", 0.25)),
            passes=int(health.get("passes", 2)),
            stable=float(health.get("stable", 1.0)),
            expect_version=bool(health.get("expect_version", True)),
            version_at=next(iter(health["version_at"].items())) if health.get("version_at") else None,
        ),
        proxy=Proxy(
            site=proxy.get("site", ":80"),
            backend_paths=tuple(proxy.get("backend_paths", ["/api/*"])),
            private_paths=tuple(proxy.get("private_paths", [])),
            caddyfile=proxy.get("caddyfile", "/etc/caddy/Caddyfile"),
            maintenance=bool(proxy.get("maintenance", False)),
            maintenance_page=proxy.get("maintenance_page"),
        ),
        shared=tuple(data.get("shared") or ()),
        env=env,
        layout=layout,
        registry_auth=registry_auth,
    )
