"""The configuration's identity: a fingerprint of what is actually rendered and run.

Gate records, good states and quarantine entries are keyed by it, so it must change with
anything that can make a process healthy or not, and with nothing else. It is derived from
the unit files as rendered (command, user, ports, paths, container runtime, image, the
reconciler's own unit template, ...), the environment file's variables, the image's digest,
the health gate's settings and the release tasks: any input that changes one of those
changes it, including a new version of the reconciler whose templates render differently.

What no gate can judge is left out: the Caddy fragment (maintenance, routes to the static
files) and a static frontend's own image (its files are checked before Caddy serves them).
A template change on upgrade is therefore a new configuration: it is rolled out (restart, or
blue-green's idle colour) and gated like any change, and if it fails, that rendering is
quarantined and the host goes back to the last good state, rendered by the earlier version;
the earlier configuration is never quarantined for it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from reconciler.plan import services
from reconciler.render import envfile
from reconciler.spec.model import DesiredState


def runtime_for(desired: DesiredState, resolved: str | None) -> str | None:
    """The container runtime the configuration runs with (None: a release folder)."""
    if desired.release.image is None:
        return None
    return resolved or desired.release.runtime or "podman"


def fingerprint(
    desired: DesiredState, runtime: str | None = None, run_as: tuple[int, int] | None = None
) -> str:
    """`runtime` and `run_as`: what the host resolved for an image release (the container
    runtime, backend.user's uid and gid): they are part of what runs."""
    d = desired
    engine = runtime_for(d, runtime) or "podman"
    if run_as is None and d.release.image and d.backend.user:
        # The host has no such user: the plan is refused for that (a blocker), and the
        # configuration is named for the refusal only.
        run_as = (-1, -1)
    if d.strategy == "blue-green":
        rendered = {"backend": services.colour_text(d, "blue", engine, run_as)}  # either colour names it
    else:
        texts = services.slot_texts(d, engine, run_as)
        rendered = {unit.rsplit("-", 1)[-1]: text for unit, text in texts.items()}
    fe = d.frontend
    canonical = {
        "strategy": d.strategy,
        "units": rendered,
        "env": envfile.body(d.env),
        "release": {"version": d.release.version, "sha256": d.release.sha256, "digest": d.release.digest},
        "dev_server_image": fe.digest if fe.mode == "dev-server" and fe.image else None,
        "health": {"path": d.backend.health, **asdict(d.health)},
        "tasks": asdict(d.release.tasks),
        "shared": list(d.shared),
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()[:16]


def env_text(desired: DesiredState, config: str) -> str:
    """The environment file: its variables, and the fingerprint the process inherits."""
    return envfile.render(desired.app, desired.env, config)
