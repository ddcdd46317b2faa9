"""Container images in the plan: which runtime runs them, whether an image is on the host
already (a revert pulls nothing), how a pull is described without its credentials, and the
frontend's own image: its static files in frontends/<name>, served by Caddy, pruned like
releases."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping

from reconciler.observe.snapshot import Observed
from reconciler.plan.actions import Action, PruneFrontend, PullFrontend, RecordGood, WriteCaddyfile
from reconciler.spec.model import DesiredState


def runtime_of(desired: DesiredState, observed: Observed) -> str:
    """The runtime the host resolved (the one named, or Podman before Docker); the named one
    or Podman when the observation did not say (a blocker reports a missing runtime)."""
    return observed.runtime or desired.release.runtime or "podman"


def run_as(desired: DesiredState, observed: Observed) -> tuple[int, int] | None:
    """The uid and primary gid backend.user has on the host, which its containers run as
    (None without backend.user, or when the host lacks it: a blocker says so)."""
    user = desired.backend.user
    account = observed.users.get(user) if user else None
    return (account.uid, account.gid) if account is not None else None


def present(observed: Observed, image: str, digest: str | None) -> bool:
    """The image is on the host, and when it is pinned, as the pinned digest."""
    return (f"{image}@{digest}" if digest else image) in observed.images


def auth(desired: DesiredState) -> Mapping[str, str] | None:
    a = desired.registry_auth
    return {"username": a.username, "password": a.password} if a is not None else None


def pull_note(desired: DesiredState, digest: str | None) -> str:
    """How a pull is described in a plan: what pins it, and where credentials come from."""
    how = f"pulled by digest {digest[:19]}..." if digest else "pulled"
    a = desired.registry_auth
    if a is not None:
        how += f" with registry credentials ({', '.join(a.names)}, secret)"
    return how


def frontend_name(image: str, digest: str | None) -> str:
    """A folder name for one frontend image: the reference, made a single path word."""
    name = re.sub(r"[/:]+", "_", image)
    return f"{name}@{digest.removeprefix('sha256:')[:12]}" if digest else name


def frontend_dir(desired: DesiredState) -> str | None:
    fe = desired.frontend
    if fe.image is None or fe.mode != "static":
        return None
    return f"{desired.frontends}/{frontend_name(fe.image, fe.digest)}"


def static_root(desired: DesiredState, release_root: str) -> str:
    """Where Caddy serves the static frontend from: the frontend image's folder, or the release's."""
    return f"{frontend_dir(desired) or release_root}/{desired.frontend.static_dir}"


def frontend_actions(desired: DesiredState, observed: Observed) -> list[Action]:
    fe = desired.frontend
    if fe.image is None:
        return []
    dest = frontend_dir(desired)
    have_image = present(observed, fe.image, fe.digest)
    if dest is not None:
        if posixpath.basename(dest) in observed.frontends:
            return []
        why = f"frontend {fe.image} is not on the host"
        pull = not have_image
    elif have_image:
        return []
    else:
        why, pull = f"frontend image {fe.image} is not on the host", True
    return [
        PullFrontend(
            f"{why}; {pull_note(desired, fe.digest)}"
            if pull
            else f"{why}; its image is, so nothing is pulled",
            image=fe.image,
            runtime=runtime_of(desired, observed),
            pull=pull,
            digest=fe.digest,
            dest=dest,
            image_root=fe.image_root,
            static_dir=fe.static_dir,
            auth=auth(desired) if pull else None,
        )
    ]


_ROOT = re.compile(r"^\s*root \* (\S+)", re.MULTILINE)


def served_frontends(desired: DesiredState, caddy_text: str | None) -> set[str]:
    """The frontend folders a Caddyfile serves from."""
    prefix = desired.frontends + "/"
    found = set()
    for root in _ROOT.findall(caddy_text or ""):
        if root.startswith(prefix):
            found.add(root[len(prefix) :].split("/", 1)[0])
    return found


def good_frontends(desired: DesiredState, observed: Observed, actions: list[Action]) -> set[str]:
    """What Caddy serves now, what this plan points it to, and what the two newest good states
    would point it back to."""
    keep = served_frontends(desired, observed.content(desired.proxy.caddyfile))
    for action in actions:
        if isinstance(action, WriteCaddyfile):
            keep |= served_frontends(desired, action.content)
    goods = list(observed.good)
    if any(isinstance(a, RecordGood) for a in actions):
        goods = goods[:1]  # this plan records its own state, which the Caddyfile above covers
    for state in goods[:2]:
        recorded = state.files.get(state.caddyfile)
        keep |= served_frontends(desired, recorded.content if recorded else None)
    return keep


def prune_frontends(desired: DesiredState, observed: Observed, actions: list[Action]) -> list[Action]:
    """Oldest first, down to release.keep; never one that serves or a rollback goes back to."""
    present_now = dict(observed.frontends)
    wanted = frontend_dir(desired)
    if wanted is not None:
        present_now.setdefault(posixpath.basename(wanted), float("inf"))
    excess = len(present_now) - desired.release.keep
    if excess <= 0:
        return []
    keep = good_frontends(desired, observed, actions)
    if wanted is not None:
        keep.add(posixpath.basename(wanted))
    candidates = sorted((t, n) for n, t in present_now.items() if n not in keep)
    return [
        PruneFrontend(
            f"more than release.keep={desired.release.keep} frontends on the host; {name} is the "
            "oldest one no state uses",
            path=f"{desired.frontends}/{name}",
            runtime=runtime_of(desired, observed),
        )
        for _, name in candidates[:excess]
    ]
