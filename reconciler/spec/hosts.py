"""`target:` as one host, a list of hosts, or groups of hosts, each with optional overrides."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from reconciler.errors import InputProblem
from reconciler.spec import secrets
from reconciler.spec.age import AgeFiles
from reconciler.spec.model import EnvVar, HostSpec, Target
from reconciler.spec.yaml_source import SourceDoc


def parse_target(text: str) -> Target:
    if text == "local":
        return Target("local")
    rest = text.removeprefix("ssh://")
    user = None
    if "@" in rest:
        user, rest = rest.split("@", 1)
    port = None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = int(tail[1:])
    elif ":" in rest:
        host, port_text = rest.rsplit(":", 1)
        port = int(port_text)
    else:
        host = rest
    return Target("ssh", host=host, user=user, port=port)


def _entries(data: Any) -> Iterator[tuple[tuple[str | int, ...], str | None, Any]]:
    """(path in the document, group, entry) for every host entry, in file order."""
    if isinstance(data, str):
        yield ("target",), None, data
    elif isinstance(data, list):
        for i, entry in enumerate(data):
            yield ("target", i), None, entry
    elif isinstance(data, dict):
        for group, entries in data.items():
            for i, entry in enumerate(entries):
                yield ("target", group, i), group, entry


def resolve_hosts(
    doc: SourceDoc,
    base_env: tuple[EnvVar, ...],
    base_dir: Path,
    environ: Mapping[str, str],
    age: AgeFiles | None = None,
) -> tuple[tuple[HostSpec, ...], list[InputProblem]]:
    hosts: list[HostSpec] = []
    problems: list[InputProblem] = []
    seen: dict[str, tuple[str | int, ...]] = {}
    for path, group, entry in _entries(doc.data.get("target")):
        url = entry if isinstance(entry, str) else entry["target"]
        target = parse_target(url)
        name = entry.get("name") if isinstance(entry, dict) else None
        name = name or (target.host if target.kind == "ssh" else "local")
        if name in seen:
            problems.append(
                doc.problem(path, f"a second host named {name!r}; give each host a distinct `name:`")
            )
            continue
        seen[name] = path
        env = base_env
        if isinstance(entry, dict) and entry.get("env"):
            overrides, env_problems = secrets.resolve_env(doc, base_dir, environ, at=(*path, "env"), age=age)
            problems += env_problems
            names = {v.name for v in overrides}
            env = (*(v for v in base_env if v.name not in names), *overrides)
        hosts.append(HostSpec(name=name, target=target, group=group, env=env))
    return tuple(hosts), problems
