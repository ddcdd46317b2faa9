"""What an unknown field probably meant.

People arrive from Kamal, Docker Compose, Ansible, Capistrano and systemd, and type the names
those use: `environment:`, `servers:`, `healthcheck:`, `keep_releases:`, `image:` at the top.
Each is mapped to the field that does that here; a typo is caught by a close match among the
mapping's own fields; a field of a neighbouring section (`port:` at the top level) is pointed
to its section.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

# (the mapping the key was found in, as a dotted path; "" is the top level) -> key -> field.
# A field with a dot is a path from the top level.
SYNONYMS: dict[str, dict[str, str]] = {
    "": {
        **dict.fromkeys(
            ["environment", "environment_variables", "env_vars", "envs", "vars", "variables", "secrets"],
            "env",
        ),
        **dict.fromkeys(["healthcheck", "health_check", "healthchecks", "readiness", "probe"], "health"),
        **dict.fromkeys(
            ["servers", "server", "hosts", "host", "targets", "inventory", "destination", "roles"], "target"
        ),
        **dict.fromkeys(["name", "service", "application", "project"], "app"),
        **dict.fromkeys(["releases"], "release"),
        **dict.fromkeys(["image", "version", "digest", "tag"], "release.{key}"),
        **dict.fromkeys(["artifact", "archive", "tarball", "dist"], "release.source"),
        **dict.fromkeys(["keep_releases"], "release.keep"),
        **dict.fromkeys(["tasks", "migrations", "migrate"], "release.tasks"),
        **dict.fromkeys(["cmd", "run", "exec", "entrypoint"], "backend.command"),
        **dict.fromkeys(["ports"], "backend.port"),
        **dict.fromkeys(["volumes", "linked_dirs", "shared_dirs", "shared_paths"], "shared"),
        **dict.fromkeys(["database", "db"], "data"),
        **dict.fromkeys(["registry", "credentials"], "registry_auth"),
        **dict.fromkeys(["caddy", "reverse_proxy", "ingress"], "proxy"),
        **dict.fromkeys(["domain", "domains", "site"], "proxy.site"),
        **dict.fromkeys(["notifications", "notification", "webhooks", "webhook", "alerts"], "notify"),
        **dict.fromkeys(["bluegreen", "blue-green"], "blue_green"),
        **dict.fromkeys(["deploy_strategy", "strategy_type"], "strategy"),
    },
    "release": {
        **dict.fromkeys(["tag"], "release.version"),
        **dict.fromkeys(["path", "artifact", "archive", "tarball", "dir", "folder", "src"], "release.source"),
        **dict.fromkeys(["checksum", "sha", "hash", "sha256sum"], "release.sha256"),
        **dict.fromkeys(["keep_releases", "retain"], "release.keep"),
        **dict.fromkeys(["migrations", "hooks"], "release.tasks"),
    },
    "backend": {
        **dict.fromkeys(
            ["healthcheck", "health_check", "healthcheck_path", "health_path", "readiness"], "backend.health"
        ),
        **dict.fromkeys(["cmd", "run", "exec", "entrypoint", "start", "start_command"], "backend.command"),
        **dict.fromkeys(["ports", "listen", "bind"], "backend.port"),
        **dict.fromkeys(["environment", "vars", "variables"], "env"),
        **dict.fromkeys(["stop_grace_period", "kill_timeout", "timeout_stop"], "backend.stop_timeout"),
        **dict.fromkeys(["kill_signal", "stopsignal"], "backend.stop_signal"),
    },
    "health": {
        **dict.fromkeys(["retries", "healthy_threshold"], "health.passes"),
        **dict.fromkeys(["path", "url", "endpoint"], "backend.health"),
        **dict.fromkeys(["start_period"], "health.timeout"),
    },
    "frontend": {
        **dict.fromkeys(["type", "kind"], "frontend.mode"),
        **dict.fromkeys(
            ["dir", "static", "root", "dist", "build_dir", "public", "public_dir"], "frontend.static_dir"
        ),
        **dict.fromkeys(["command", "cmd"], "frontend.dev_command"),
        **dict.fromkeys(["port"], "frontend.dev_port"),
    },
    "proxy": {
        **dict.fromkeys(["host", "hosts", "domain", "domains", "address", "server_name"], "proxy.site"),
    },
    "data": {
        **dict.fromkeys(["database", "db", "path", "file"], "data.sqlite"),
        **dict.fromkeys(["backup", "backups", "snapshots"], "data.snapshot"),
        **dict.fromkeys(["restore"], "data.restore_on_rollback"),
    },
}


def _properties(schema: Mapping[str, Any], node: Mapping[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        node = schema["$defs"][str(node["$ref"]).rsplit("/", 1)[1]]
    return dict(node.get("properties") or {})


def _fields(schema: Mapping[str, Any]) -> dict[str, set[str]]:
    """Every section's fields, by the section's dotted path ("" for the top level)."""
    top = _properties(schema, schema)
    out = {"": set(top)}
    for name, sub in top.items():
        props = _properties(schema, sub)
        if props:
            out[name] = set(props)
    return out


def suggest(schema: Mapping[str, Any], where: Iterable[str | int], key: str) -> str | None:
    """What `key`, found in the mapping at `where`, was probably meant to be, said as a hint:
    "did you mean 'env'?", or where a field of another section goes. None: no good guess."""
    path = tuple(where)
    if any(isinstance(p, int) for p in path) or len(path) > 1:
        return None  # hosts, webhooks, env values: their own checks say what is wrong
    here = ".".join(str(p) for p in path)
    sections = _fields(schema)
    known = sections.get(here, set())
    lowered = key.lower().replace("-", "_")
    wanted: str | None = None
    if lowered in known and lowered != key:
        wanted = lowered
    elif lowered in SYNONYMS.get(here, {}):
        wanted = SYNONYMS[here][lowered].format(key=lowered)
    else:
        close = difflib.get_close_matches(key, sorted(known), n=1)
        if close:
            wanted = close[0]
        elif not here:  # a field of a section, written at the top level: `port:`, `sqlite:`
            owners = [
                f"{name}.{lowered}" for name, fields in sorted(sections.items()) if name and lowered in fields
            ]
            wanted = owners[0] if len(owners) == 1 else None
        elif lowered in sections[""]:  # a top-level field inside a section: `env:` in backend
            wanted = lowered
    if wanted is None:
        return None
    if here and wanted.startswith(f"{here}."):
        wanted = wanted[len(here) + 1 :]
    if "." in wanted:
        section, _, name = wanted.rpartition(".")
        return f"did you mean {wanted}? (write `{name}:` under `{section}:`)"
    if here and wanted not in known:
        return f"did you mean the top-level `{wanted}:`? (it goes at the top level, not under `{here}:`)"
    return f"did you mean {wanted!r}?"
