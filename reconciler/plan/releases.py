"""Releases on the host: putting the desired one there, and pruning old ones down to
release.keep without ever removing one in use or one a rollback would go back to."""

from __future__ import annotations

import posixpath

from reconciler.observe.snapshot import LinkState, Observed, UnitState
from reconciler.plan import images
from reconciler.plan.actions import (
    Action,
    CheckHealth,
    LinkShared,
    LoadImage,
    MakeShared,
    PruneRelease,
    RecordGood,
    SetSymlink,
    Systemctl,
    UploadRelease,
)
from reconciler.spec.model import DesiredState

COLOURS = ("blue", "green")


def release_dir(desired: DesiredState, version: str) -> str:
    return desired.layout.release_dir(version)


def link_points_to(observed: Observed, link_path: str) -> str | None:
    """The absolute, normalised path a symlink names, or None."""
    link = observed.link(link_path)
    if link is None or link.kind != "symlink" or link.target is None:
        return None
    return posixpath.normpath(posixpath.join(posixpath.dirname(link_path), link.target))


def relative(desired: DesiredState, path: str) -> str:
    return posixpath.relpath(path, desired.layout.root)


def upload_if_missing(desired: DesiredState, observed: Observed) -> list[Action]:
    rel = desired.release
    version = rel.version
    have = observed.releases.get(version)
    if rel.image is not None:
        # A digest pins a pull; a loaded archive has none to compare (release.sha256 pins it).
        pinned = rel.digest if rel.source is None else None
        if have is not None and images.present(observed, rel.image, pinned):
            return []
        why = (
            f"release {version} is not on the host"
            if have is None
            else f"image {rel.image} is not on the host"
        )
        pulled = rel.source is None
        static = desired.frontend.mode == "static" and desired.frontend.image is None
        return [
            LoadImage(
                f"{why}; {images.pull_note(desired, rel.digest)}" if pulled else why,
                version=version,
                image=rel.image,
                releases=desired.layout.releases,
                state=desired.layout.state,
                source=rel.source,
                sha256=rel.sha256,
                digest=rel.digest,
                image_root=rel.image_root,
                static_dir=desired.frontend.static_dir if static else None,
                runtime=images.runtime_of(desired, observed),
                auth=images.auth(desired) if pulled else None,
            )
        ]
    if have is None and rel.source is not None:
        return [
            UploadRelease(
                f"release {version} is not on the host",
                version=version,
                releases=desired.layout.releases,
                source=rel.source,
                sha256=rel.sha256,
            )
        ]
    return []


def shared_actions(desired: DesiredState, observed: Observed) -> list[Action]:
    """The release's shared paths linked to the one copy under <root>/shared. An image release
    gets them as volumes instead (see the unit), which must exist before a container starts."""
    if not desired.shared:
        return []
    if desired.release.image:
        return _image_shared(desired, observed)
    release = release_dir(desired, desired.release.version)
    missing = [
        p
        for p in desired.shared
        if link_points_to(observed, f"{release}/{p}") != f"{desired.layout.shared}/{p}"
    ]
    if not missing:
        return []
    return [
        LinkShared(
            f"{', '.join(missing)} in release {desired.release.version} "
            f"{'is' if len(missing) == 1 else 'are'} not linked to {desired.layout.shared}",
            release=release,
            shared=desired.layout.shared,
            paths=tuple(desired.shared),
            owner=desired.backend.user,
        )
    ]


def _image_shared(desired: DesiredState, observed: Observed) -> list[Action]:
    shared = desired.layout.shared
    missing = [p for p in desired.shared if not _is_folder(observed.link(f"{shared}/{p}"))]
    if not missing:
        return []
    one = len(missing) == 1
    return [
        MakeShared(
            f"{', '.join(missing)} {'does' if one else 'do'} not exist in {shared}: "
            f"the image's containers bind {'it' if one else 'them'}",
            shared=shared,
            paths=tuple(missing),
            owner=desired.backend.user,
        )
    ]


def _is_folder(link: LinkState | None) -> bool:
    return link is not None and (link.kind == "dir" or (link.kind == "symlink" and link.resolves))


def running_release(unit: UnitState) -> str | None:
    """The release a unit's process runs: named in its environment, or (a process started by
    an older reconciler) the folder it was started in."""
    if not unit.is_active:
        return None
    return unit.release or (posixpath.basename(unit.cwd) if unit.cwd else None)


def protected_releases(desired: DesiredState, observed: Observed, actions: list[Action]) -> set[str]:
    """Releases in use once this plan has run: the desired one, whatever a link names after the
    plan's symlink swaps, what a process keeps running because the plan leaves it alone, and
    the two newest good states (what a rollback goes back to)."""
    links = {
        path: link_points_to(observed, path)
        for path in (
            desired.layout.current,
            desired.layout.previous,
            *(desired.colour_link(c) for c in COLOURS),
        )
    }
    touched_units: set[str] = set()
    for action in actions:
        if isinstance(action, SetSymlink):
            links[action.path] = posixpath.normpath(
                posixpath.join(posixpath.dirname(action.path), action.target_path)
            )
        elif isinstance(action, Systemctl):
            touched_units.add(action.unit)
    keep = {desired.release.version} | {posixpath.basename(t) for t in links.values() if t}
    keep |= _rollback_targets(observed, actions)
    for name in (desired.backend_unit, desired.frontend_unit, *(desired.colour_unit(c) for c in COLOURS)):
        running = running_release(observed.unit(name))
        if running and name not in touched_units and name not in _may_stop(actions):
            keep.add(running)
    return keep


def _may_stop(actions: list[Action]) -> set[str]:
    """Units the plan stops only if their (idle) gate fails."""
    return {a.unit for a in actions if isinstance(a, CheckHealth) and a.idle and a.unit}


def _rollback_targets(observed: Observed, actions: list[Action]) -> set[str]:
    """The releases of the two newest good states once this plan has recorded its own."""
    configs = [(g.config, g.version) for g in observed.good]
    for action in actions:
        if isinstance(action, RecordGood):
            configs = [(action.config, action.version), *(c for c in configs if c[0] != action.config)]
    return {version for _, version in configs[:2]}


def prune(desired: DesiredState, observed: Observed, actions: list[Action]) -> list[Action]:
    """Oldest first, down to release.keep; never a release in use or the one being deployed."""
    present = set(observed.releases) | {
        a.version for a in actions if isinstance(a, (UploadRelease, LoadImage))
    }
    excess = len(present) - desired.release.keep
    if excess <= 0:
        return []
    keep = protected_releases(desired, observed, actions)
    maybe = {  # what an idle colour runs, which the plan stops if its gate fails: guarded
        release: unit
        for unit in _may_stop(actions)
        if (release := running_release(observed.unit(unit))) is not None
    }
    candidates = sorted(
        (observed.releases[v] for v in present - keep if v in observed.releases),
        key=lambda r: (r.version in maybe, r.uploaded, r.version),
    )
    return [
        PruneRelease(
            f"more than release.keep={desired.release.keep} releases on the host; "
            f"{r.version} is the oldest one not in use"
            + (f" (unless {maybe[r.version]} still runs it then)" if r.version in maybe else ""),
            version=r.version,
            releases=desired.layout.releases,
            state=desired.layout.state,
            image=r.image,
            runtime=images.runtime_of(desired, observed) if r.image else None,
            unless_running=(maybe[r.version],) if r.version in maybe else (),
        )
        for r in candidates[:excess]
    ]
