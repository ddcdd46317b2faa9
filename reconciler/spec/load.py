"""desired-state.yaml -> DesiredState, or every problem with the file at once.

One pass, every problem located with file:line:column and the field:
1. YAML: syntax, encoding, duplicate keys, alias bombs (yaml_source; a syntax error stops here);
2. the JSON Schema in schemas/ (types, required fields, unknown fields, patterns; schema_check);
3. checks a schema cannot express (commands, ports that collide, `..` in a version; semantics);
4. values: ${NAME}s, from_file, from_age, hosts, webhooks (secrets, hosts, notify), the
   artifact (artifacts), fields that must agree and settings that do nothing (coherence).
Pass 4 runs even when the others found problems, skipping what they already reported, so an
unset variable is not discovered only after the typos are fixed. Nothing here touches the
network or the host.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from reconciler.errors import InputProblem, InvalidDesiredState
from reconciler.spec import artifacts, coherence, notify, schema_check, secrets, yaml_source
from reconciler.spec.hosts import resolve_hosts, unknown_limit
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
)
from reconciler.spec.semantics import parse_command, semantic_problems
from reconciler.spec.yaml_source import Path_, SourceDoc


@dataclass(frozen=True)
class Checks:
    """What a load checks beyond the file. A run needs the file and its secrets; the artifact
    only if it uploads it (the engine checks it then), so only its kind is looked at here.
    `reconcile validate` asks for the artifact too, and --offline for no secret at all."""

    artifacts: bool = False  # the artifact must exist and have release.sha256's checksum
    offline: bool = False  # read no secret and no key; a missing artifact is a warning
    require_checksum: bool = False  # --require-checksum: release.sha256 (a pulled image: digest)
    limit: tuple[str, ...] = ()  # --limit: each name must be a host or a group of the file


@dataclass(frozen=True)
class Checked:
    """What a load found: the desired state when there is no error, and every problem."""

    desired: DesiredState | None
    problems: tuple[InputProblem, ...]  # errors and warnings, in file order
    skipped: tuple[str, ...] = ()  # what --offline did not read
    release: artifacts.ReleaseView | None = None  # the release folder or archive, to look inside

    @property
    def errors(self) -> list[InputProblem]:
        return [p for p in self.problems if p.is_error]

    @property
    def warnings(self) -> list[InputProblem]:
        return [p for p in self.problems if not p.is_error]


def _verbatim(path: Path_) -> bool:
    """release.version and env values (top-level or a host's) keep the text as written."""
    if path == ("release", "version") or (path and path[0] == "registry_auth"):
        return True
    if "env" not in path:
        return False
    after = len(path) - path.index("env") - 1
    return after == 1 or (after == 2 and path[-1] == "value")


def load(
    file: Path | str,
    *,
    target_override: str | None = None,
    cache_dir: Path | None = None,
    checks: Checks = Checks(),
) -> DesiredState:
    """Load and check a desired-state file; raise InvalidDesiredState listing every problem.

    With `cache_dir`, bytes that passed the schema once skip it next time (see
    schema_problems_cached); the caller decides whether that folder may be written."""
    return _or_raise(check(file, target_override=target_override, cache_dir=cache_dir, checks=checks))


def load_bytes(
    raw: bytes,
    shown: str,
    *,
    base_dir: Path,
    target_override: str | None = None,
    environ: Mapping[str, str] | None = None,
    cache_dir: Path | None = None,
    checks: Checks = Checks(),
) -> DesiredState:
    """`environ` feeds ${NAME} and from_env (default: this process's environment)."""
    checked = check_bytes(
        raw,
        shown,
        base_dir=base_dir,
        target_override=target_override,
        environ=environ,
        cache_dir=cache_dir,
        checks=checks,
    )
    return _or_raise(checked)


def _or_raise(checked: Checked) -> DesiredState:
    if checked.desired is None:
        exc = InvalidDesiredState(checked.errors)
        exc.warnings = checked.warnings
        raise exc
    return checked.desired


def check(
    file: Path | str,
    *,
    target_override: str | None = None,
    cache_dir: Path | None = None,
    checks: Checks = Checks(),
    environ: Mapping[str, str] | None = None,
) -> Checked:
    """Every problem with a desired-state file, and the desired state when it has no error."""
    path = Path(file)
    shown = str(file)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        why = InputProblem(shown, None, None, "", "no such file", "pass the desired state with -f FILE")
        return Checked(None, (why,))
    except OSError as exc:
        return Checked(None, (InputProblem(shown, None, None, "", f"cannot read: {exc.strerror}"),))
    return check_bytes(
        raw,
        shown,
        base_dir=path.resolve().parent,
        target_override=target_override,
        cache_dir=cache_dir,
        checks=checks,
        environ=environ,
    )


def check_bytes(
    raw: bytes,
    shown: str,
    *,
    base_dir: Path,
    target_override: str | None = None,
    environ: Mapping[str, str] | None = None,
    cache_dir: Path | None = None,
    checks: Checks = Checks(),
) -> Checked:
    try:
        doc = yaml_source.parse(raw, shown, verbatim=_verbatim)
    except InvalidDesiredState as exc:
        return Checked(None, tuple(exc.problems))
    if target_override is not None and isinstance(doc.data, dict):
        doc.data["target"] = target_override
    problems = list(doc.problems)
    schema = (
        schema_check.schema_problems(doc)
        if cache_dir is None
        else schema_check.schema_problems_cached(doc, raw, target_override, cache_dir)
    )
    problems += _not_reported(schema, problems)
    if not isinstance(doc.data, dict):
        return Checked(None, tuple(problems))
    problems += _not_reported(semantic_problems(doc), problems)
    env_source = os.environ if environ is None else environ
    reader = secrets.Reader.of(env_source, base_dir, offline=checks.offline)
    env, env_problems = secrets.resolve_env(doc, reader)
    host_specs, host_problems = resolve_hosts(doc, env, reader)
    hooks, notify_problems = notify.resolve(doc, env_source, reader.skipped if checks.offline else None)
    registry_auth, auth_problems = secrets.resolve_registry_auth(doc, reader)
    later = env_problems + host_problems + notify_problems + auth_problems
    limit = unknown_limit(host_specs, checks.limit) if checks.limit and host_specs else None
    if limit is not None:
        later.append(doc.problem(("target",), limit.message, limit.hint))
    later += artifacts.source_problems(
        doc,
        base_dir,
        must_exist=checks.artifacts,
        offline=checks.offline,
        checksum=checks.artifacts,
        skipped=reader.skipped,
    )
    later += coherence.database_problems(doc, env_source, offline=checks.offline)
    if checks.require_checksum:
        later += _checksum_required(doc)
    later += coherence.ineffective(doc)
    problems += _not_reported(later, problems)
    problems.sort(key=lambda p: (p.line or 0, p.column or 0, p.field))
    skipped = tuple(reader.skipped.lines())
    release = artifacts.release_view(doc, base_dir, problems) if checks.artifacts else None
    if any(p.is_error for p in problems):
        return Checked(None, tuple(problems), skipped, release)
    desired = build(doc.data, Path(shown), base_dir, env, host_specs, registry_auth)
    warnings = tuple(p for p in problems if not p.is_error)
    desired = replace(desired, notify=hooks, marks=dict(doc.marks), warnings=warnings)
    return Checked(desired, tuple(problems), skipped, release)


def _related(a: str, b: str) -> bool:
    return bool(a and b) and (a == b or a.startswith(b + ".") or b.startswith(a + "."))


def _not_reported(later: list[InputProblem], earlier: list[InputProblem]) -> list[InputProblem]:
    """A pass says nothing about a field an earlier pass already reported (a value of the
    wrong type, a misspelt source, a YAML tag): one mistake, one problem."""
    return [p for p in later if not any(_related(p.field, q.field) for q in earlier)]


def _checksum_required(doc: SourceDoc) -> list[InputProblem]:
    release = doc.data.get("release")
    if not isinstance(release, dict):
        return []
    if "image" in release and "source" not in release:
        if "digest" in release:
            return []
        return [
            doc.problem(
                ("release", "digest"),
                "required by --require-checksum: a pulled image is pinned by its digest",
                "add the image's digest (sha256:...), as `podman image inspect --format {{.Digest}}` shows",
                at=("release",),
            )
        ]
    if "sha256" in release:
        return []
    return [
        doc.problem(
            ("release", "sha256"),
            "required by --require-checksum",
            "add the artifact's checksum (sha256sum FILE)",
            at=("release",),
        )
    ]


# --- building the model -----------------------------------------------------------------


def build(
    data: dict[str, Any],
    file: Path,
    base_dir: Path,
    env: tuple[EnvVar, ...],
    hosts: tuple[HostSpec, ...],
    registry_auth: RegistryAuth | None = None,
) -> DesiredState:
    """The model of a document every check passed."""
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
