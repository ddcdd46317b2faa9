"""`reconcile render`: the files a desired state writes on a host, without a host.

The planner is asked what it would do to an empty host (systemd and Caddy installed, no
release, no unit, no Caddyfile, `backend.user` present, the container runtime the file names
or Podman), and the files its write actions carry are the answer: exactly the text a first
deploy writes, from the same renderers. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from reconciler.observe.snapshot import Observed, UserState
from reconciler.plan.actions import WriteCaddyfile, WriteFile
from reconciler.plan.planner import plan
from reconciler.render import envfile
from reconciler.spec.model import DesiredState

CADDY_FILE_MODE = 0o644  # as the agent writes Caddy's files


@dataclass(frozen=True)
class RenderedFile:
    path: str
    content: str  # secret values masked when `secret`
    mode: int
    secret: bool  # an environment file: its secret values are shown as (secret)


def runtime(desired: DesiredState) -> str | None:
    """The container runtime assumed: the one the file names, else Podman (None: no image)."""
    if desired.release.image is None:
        return None
    return desired.release.runtime or "podman"


def empty_host(desired: DesiredState, hostname: str) -> Observed:
    users = {desired.backend.user: UserState(uid=999, has_group=True)} if desired.backend.user else {}
    run = runtime(desired)
    commands = {"systemctl": "/usr/bin/systemctl", "caddy": "/usr/bin/caddy"}
    if run is not None:
        commands[run] = f"/usr/bin/{run}"
    return Observed(
        hostname=hostname,
        files=MappingProxyType({}),
        links=MappingProxyType({}),
        releases=MappingProxyType({}),
        units=MappingProxyType({}),
        commands=MappingProxyType(commands),
        quarantine=MappingProxyType({}),
        lock_holder=None,
        runtime=run,
        users=MappingProxyType(users),
    )


def rendered_files(desired: DesiredState, hostname: str = "") -> list[RenderedFile]:
    """Every file a first deploy of `desired` writes, in the order it writes them."""
    out: list[RenderedFile] = []
    for action in plan(desired, empty_host(desired, hostname)).actions:
        if isinstance(action, WriteFile):
            content = envfile.masked(action.content, desired.env) if action.secret else action.content
            out.append(RenderedFile(action.path, content, action.mode, action.secret))
        elif isinstance(action, WriteCaddyfile) and action.content is not None:
            out.append(RenderedFile(action.path, action.content, CADDY_FILE_MODE, False))
    return out
