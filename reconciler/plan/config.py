"""The environment files that carry the configuration fingerprint (plan/identity.py), and
how a process's configuration differs from the desired one, in words that never show a value.

Gate records, good states and quarantine entries are keyed by the fingerprint, so a failing
env change quarantines that configuration and never the healthy release underneath, and a
fixed file is simply another configuration.
"""

from __future__ import annotations

from reconciler.observe.snapshot import Observed
from reconciler.plan.actions import Action, WriteFile
from reconciler.plan.adopt import is_foreign
from reconciler.plan.identity import env_text
from reconciler.render import envfile
from reconciler.spec.model import DesiredState


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


def env_file_actions(desired: DesiredState, observed: Observed, path: str, config: str) -> list[Action]:
    text = env_text(desired, config)
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
