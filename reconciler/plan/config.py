"""The configuration fingerprint, and the environment files that carry it.

A fingerprint names everything about the desired state that decides whether a process is
healthy: the release (and image), the command, the user, ports, health settings, the
frontend and every env value. Gate records, good states and quarantine entries are keyed by
it, so a failing env change quarantines that configuration and never the healthy release
underneath, and a fixed file is simply another configuration.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from reconciler.observe.snapshot import Observed
from reconciler.plan.actions import Action, WriteFile
from reconciler.plan.adopt import is_foreign
from reconciler.render import envfile
from reconciler.spec.model import DesiredState


def fingerprint(desired: DesiredState) -> str:
    rel = desired.release
    canonical = {
        "app": desired.app,
        "strategy": desired.strategy,
        "release": {
            "version": rel.version,
            "image": rel.image,
            "digest": rel.digest,
            "image_root": rel.image_root,
            "sha256": rel.sha256,
        },
        "backend": asdict(desired.backend),
        "frontend": _frontend(desired),
        "health": _health(desired),
        "blue_green": {"blue": desired.blue_green.blue_port, "green": desired.blue_green.green_port},
        "env": envfile.body(desired.env),
        "tasks": asdict(rel.tasks),
        "shared": list(desired.shared),
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()[:16]


def _health(desired: DesiredState) -> dict[str, object]:
    """Where the version is looked for decides what passes, so it is part of a configuration
    when it is set (a quarantined release with it named is another configuration); unset, it
    leaves the fingerprints of files written before it existed as they were."""
    health = asdict(desired.health)
    if desired.health.version_at is None:
        health.pop("version_at")
    return health


def _frontend(desired: DesiredState) -> dict[str, object]:
    """The frontend as far as a gate judges it. A static frontend's own image is left out: no
    gate can fail because of it (its files are checked before Caddy serves them), so a bump
    of it alone is not a new configuration and restarts no backend. A dev server's image is
    in: its gate judges it, and what fails must be told from what passed."""
    fe = asdict(desired.frontend)
    # How Caddy serves the static files (fallback, caching) is no process's business.
    fe.pop("spa")
    fe.pop("immutable_paths")
    if desired.frontend.mode == "static" or desired.frontend.image is None:
        for key in ("image", "digest", "image_root"):
            fe.pop(key)
    return fe


def env_text(desired: DesiredState) -> str:
    return envfile.render(desired.app, desired.env, fingerprint(desired))


def env_names(desired: DesiredState, names: list[str]) -> str:
    """Changed variable names, secrets marked as such; values are never part of a reason."""
    secret = {v.name for v in desired.env if v.secret}
    return ", ".join(f"{n} (secret)" if n in secret else n for n in names)


def config_change(desired: DesiredState, observed: Observed, path: str, running_version: str | None) -> str:
    """Why a process's configuration is not the desired one, in words; never a value."""
    version = desired.release.version
    if running_version and running_version != version:
        return f"runs release {running_version}, desired {version}"
    names = envfile.changed_names(observed.content(path), desired.env)
    if names:
        return "environment changed: " + env_names(desired, names)
    return "started with another configuration (release, command, health settings or environment)"


def env_file_actions(desired: DesiredState, observed: Observed, path: str) -> list[Action]:
    text = env_text(desired)
    have = observed.file(path)
    if have is not None and have.content == text and have.mode == 0o640:
        return []
    if have is None:
        reason = f"{path} does not exist"
    elif is_foreign(have.content):
        reason = f"{path} was written by someone else: adopted, a backup is kept"
    elif have.content != text:
        names = envfile.changed_names(have.content, desired.env)
        reason = (
            f"{path} differs: " + env_names(desired, names)
            if names
            else f"{path} was written for another configuration"
        )
    else:
        reason = f"{path} has mode {oct(have.mode or 0)}, expected 0o640"
    return [
        WriteFile(
            reason,
            path=path,
            content=text,
            mode=0o640,
            group=desired.backend.user,
            secret=True,
            backup=is_foreign(have.content if have else None),
        )
    ]
