"""The backend's EnvironmentFile: rendering, reading back, and a secret-safe diff.

The file carries `RECONCILER_ENV_HASH`, a hash of the other lines. The backend inherits it,
so comparing the running process's value with the desired one tells whether the process
runs with the current settings, without ever showing a value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from reconciler.spec.model import EnvVar

HASH_VAR = "RECONCILER_ENV_HASH"
HEADER = "# Managed by reconciler ({app}): edits here are reverted on the next run.\n"
_ESCAPE = {"\\": "\\\\", '"': '\\"', "`": "\\`", "$": "\\$"}


def quote(value: str) -> str:
    """Double quotes with systemd's escapes for \\ " ` $ (its EnvironmentFile parser is shell-like)."""
    return '"' + "".join(_ESCAPE.get(c, c) for c in value) + '"'


def render(app: str, env: Iterable[EnvVar]) -> str:
    body = "".join(f"{var.name}={quote(var.value)}\n" for var in sorted(env, key=lambda v: v.name))
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    return HEADER.format(app=app) + f"{HASH_VAR}={digest}\n" + body


def hash_of(text: str | None) -> str | None:
    return parse(text).get(HASH_VAR) if text is not None else None


def parse(text: str) -> dict[str, str]:
    """Read KEY=VALUE lines the way systemd does for the forms we write (and plain hand edits)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            chars, i, inner = [], 0, value[1:-1]
            while i < len(inner):
                if inner[i] == "\\" and i + 1 < len(inner) and inner[i + 1] in '\\"`$':
                    i += 1
                chars.append(inner[i])
                i += 1
            value = "".join(chars)
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def changed_names(old_text: str | None, new: Iterable[EnvVar]) -> list[str]:
    """Names whose value differs, is new or is gone; values themselves never leave here."""
    old: Mapping[str, str] = parse(old_text) if old_text else {}
    old = {k: v for k, v in old.items() if k != HASH_VAR}
    wanted = {v.name: v.value for v in new}
    return sorted(k for k in old.keys() | wanted.keys() if old.get(k) != wanted.get(k))
