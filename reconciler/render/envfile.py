"""The backend's EnvironmentFile: rendering, reading back, and a secret-safe diff.

The file carries `RECONCILER_CONFIG`, the configuration fingerprint of the desired state it
was rendered for (release, command, image, health settings and every env value; see
`reconciler.plan.config`). The backend inherits it, so the running process itself says
which configuration it was started with, and a gate record or a quarantine entry can name
that configuration without ever showing a value. The fingerprint is derived from secrets, so
it lives only where the secrets do: this file (0640), the process environment and the
reconciler's state folder (0700).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from reconciler.spec.model import EnvVar

CONFIG_VAR = "RECONCILER_CONFIG"
HEADER = "# Managed by reconciler ({app}): edits here are reverted on the next run.\n"
_ESCAPE = {"\\": "\\\\", '"': '\\"', "`": "\\`", "$": "\\$"}


def quote(value: str) -> str:
    """Double quotes with systemd's escapes for \\ " ` $ (its EnvironmentFile parser is shell-like)."""
    return '"' + "".join(_ESCAPE.get(c, c) for c in value) + '"'


def body(env: Iterable[EnvVar]) -> str:
    """The variables as lines, sorted by name: what the configuration fingerprint covers."""
    return "".join(f"{var.name}={quote(var.value)}\n" for var in sorted(env, key=lambda v: v.name))


def render(app: str, env: Iterable[EnvVar], config: str) -> str:
    return HEADER.format(app=app) + f"{CONFIG_VAR}={config}\n" + body(env)


def config_of(text: str | None) -> str | None:
    return parse(text).get(CONFIG_VAR) if text is not None else None


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
    old = {k: v for k, v in old.items() if k != CONFIG_VAR}
    wanted = {v.name: v.value for v in new}
    return sorted(k for k in old.keys() | wanted.keys() if old.get(k) != wanted.get(k))


SECRET = "(secret)"  # noqa: S105 - what is shown instead of a secret


def masked(text: str, env: Iterable[EnvVar]) -> str:
    """The file as it may be shown: every secret variable's value replaced by `(secret)`.
    Values that are not secret are in the desired state in clear already."""
    secret = {v.name for v in env if v.secret}
    lines = []
    for line in text.splitlines():
        name, sep, _ = line.partition("=")
        if sep and not line.lstrip().startswith(("#", ";")) and name.strip() in secret:
            lines.append(f"{name.strip()}={SECRET}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"
