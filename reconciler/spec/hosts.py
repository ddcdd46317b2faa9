"""`target:` as one host, a list of hosts, or groups of hosts, each with optional overrides."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from reconciler.errors import InputProblem
from reconciler.spec import secrets
from reconciler.spec.model import DesiredState, EnvVar, HostSpec, Target
from reconciler.spec.said import Said
from reconciler.spec.yaml_source import SourceDoc

# As the schema's target_url: an entry that does not match is reported there, and skipped here.
_TARGET = re.compile(r"^(local|ssh://([A-Za-z0-9._-]+@)?([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?)$")


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


def entries(data: Any) -> Iterator[tuple[tuple[str | int, ...], str | None, Any]]:
    """(path in the document, group, entry) for every host entry, in file order."""
    if isinstance(data, str):
        yield ("target",), None, data
    elif isinstance(data, list):
        for i, entry in enumerate(data):
            yield ("target", i), None, entry
    elif isinstance(data, dict):
        for group, listed in data.items():
            for i, entry in enumerate(listed if isinstance(listed, list) else []):
                yield ("target", group, i), group, entry


def resolve_hosts(
    doc: SourceDoc, base_env: tuple[EnvVar, ...], reader: secrets.Reader
) -> tuple[tuple[HostSpec, ...], list[InputProblem]]:
    hosts: list[HostSpec] = []
    problems: list[InputProblem] = []
    seen: dict[str, tuple[str | int, ...]] = {}
    data = doc.data.get("target") if isinstance(doc.data, dict) else None
    for path, group, entry in entries(data):
        url = entry.get("target") if isinstance(entry, dict) else entry
        if not isinstance(url, str) or not _TARGET.match(url):
            continue  # the schema reports it
        target = parse_target(url)
        name = entry.get("name") if isinstance(entry, dict) else None
        name = name if isinstance(name, str) and name else (target.host if target.kind == "ssh" else "local")
        if name in seen:
            problems.append(
                doc.problem(path, f"a second host named {name!r}", "give each host a distinct `name:`")
            )
            continue
        seen[name] = path
        env = base_env
        if isinstance(entry, dict) and entry.get("env"):
            overrides, env_problems = secrets.resolve_env(doc, reader, at=(*path, "env"))
            problems += env_problems
            names = {v.name for v in overrides}
            env = (*(v for v in base_env if v.name not in names), *overrides)
        hosts.append(HostSpec(name=name, target=target, group=group, env=env))
    return tuple(hosts), problems


def unknown_limit(hosts: Iterable[HostSpec], limit: Iterable[str]) -> Said | None:
    """--limit names that are neither a host nor a group of the file, said with those there are."""
    wanted = [w for item in limit for w in item.split(",") if w]
    hosts = list(hosts)
    names = [h.name for h in hosts]
    groups = sorted({h.group for h in hosts if h.group})
    unknown = [w for w in wanted if w not in names and w not in groups]
    if not unknown:
        return None
    known = f"hosts: {', '.join(names)}" + (f"; groups: {', '.join(groups)}" if groups else "")
    return Said(
        f"--limit names {', '.join(unknown)}, which is neither a host nor a group of this file ({known})",
        "name one of those, or add the host under target",
    )


def limit_problems(desired: DesiredState, limit: Iterable[str]) -> list[InputProblem]:
    """unknown_limit, located at `target`."""
    said = unknown_limit(desired.hosts, limit)
    return [] if said is None else [desired.problem("target", said.message, said.hint)]
