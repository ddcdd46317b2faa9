"""What is on the host to go back to (`reconcile releases`), as a pure function of the
observation and the sizes the agent measured: every release with what points at it, the good
states recorded of it, what of it is quarantined, and which one `reconcile rollback` picks."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.observe.snapshot import Observed
from reconciler.plan import manual
from reconciler.plan.planner import serving_release
from reconciler.plan.releases import link_points_to
from reconciler.spec.model import DesiredState


@dataclass(frozen=True)
class Row:
    version: str
    size: int | None  # bytes on disk of the release folder
    files: int | None
    image_size: int | None  # bytes of its container image, for image releases
    uploaded: str
    sha256: str | None
    image: str | None
    marks: tuple[str, ...]  # serving, current, previous, blue, green
    good: tuple[str, ...]  # the configurations recorded as good, newest first
    good_since: str  # when its newest good state started serving
    quarantined: tuple[str, ...]  # why each quarantined configuration of it failed
    blocked: str | None  # why `rollback VERSION` cannot go to it (None: it can, or it has no good state)
    pick: bool  # `reconcile rollback` without VERSION goes here


@dataclass(frozen=True)
class Inventory:
    rows: tuple[Row, ...]
    pick: str | None
    pick_error: str | None
    held: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "releases": [
                {
                    "version": r.version,
                    "size": r.size,
                    "files": r.files,
                    "image_size": r.image_size,
                    "uploaded": r.uploaded or None,
                    "sha256": r.sha256,
                    "image": r.image,
                    "current": "current" in r.marks,
                    "previous": "previous" in r.marks,
                    "serving": "serving" in r.marks,
                    "colours": [m for m in r.marks if m in ("blue", "green")],
                    "good": list(r.good),
                    "good_since": r.good_since or None,
                    "quarantined": list(r.quarantined),
                    "rollback_blocked": r.blocked,
                    "rollback_pick": r.pick,
                }
                for r in self.rows
            ],
            "rollback": self.pick,
            "rollback_error": self.pick_error,
            "held": self.held,
        }

    def text(self, host: str) -> str:
        if not self.rows:
            lines = [f"{host}: no releases on the host"]
        else:
            lines = [f"{host}: {len(self.rows)} release{'s' if len(self.rows) != 1 else ''}"]
            width = max(7, *(len(r.version) for r in self.rows))
            lines.append(f"  {'RELEASE':<{width}}  {'SIZE':>8}  {'UPLOADED':<20}  {'SHA256':<12}  STATE")
            for r in self.rows:
                size = _size(r.size) + (f" + image {_size(r.image_size)}" if r.image_size else "")
                state = list(r.marks)
                if r.good:
                    state.append(
                        f"good since {r.good_since or '?'}" + (f" ({len(r.good)})" if len(r.good) > 1 else "")
                    )
                state += [f"quarantined: {q}" for q in r.quarantined]
                if r.pick:
                    state.append("<- rollback")
                sha = (r.sha256 or "-")[:12]
                lines.append(
                    f"  {r.version:<{width}}  {size:>8}  {r.uploaded or '?':<20}  {sha:<12}  "
                    + ", ".join(state)
                )
        if self.held:
            lines.append(f"{self.held} (`reconcile resume` ends it)")
        if self.pick:
            lines.append(f"`reconcile rollback` would go back to {self.pick}")
        else:
            lines.append(f"`reconcile rollback`: {self.pick_error}")
        return "\n".join(lines)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def inventory(desired: DesiredState, observed: Observed, sizes: Mapping[str, Any]) -> Inventory:
    """`sizes`: the agent's `releases` answer (version -> size, files, image_size)."""
    layout = desired.layout
    links = {"current": layout.current, "previous": layout.previous}
    links |= {colour: desired.colour_link(colour) for colour in ("blue", "green")}
    pointing: dict[str, list[str]] = {}
    for mark, path in links.items():
        target = link_points_to(observed, path)
        if target is not None and posixpath.dirname(target) == layout.releases:
            pointing.setdefault(posixpath.basename(target), []).append(mark)
    serving = serving_release(desired, observed)
    choice = manual.choose(desired, observed, None)
    found = manual.candidates(desired, observed)
    rows = []
    for version in sorted(set(observed.releases) | set(sizes), key=lambda v: _uploaded(observed, v)):
        release = observed.releases.get(version)
        measured = sizes.get(version) or {}
        goods = [c for c in found if c.state.version == version]
        marks = (["serving"] if version == serving else []) + pointing.get(version, [])
        quarantined = tuple(
            e.reason or "failed" for e in observed.quarantine.values() if e.version == version
        )
        usable = [c for c in goods if c.blocked is None]
        rows.append(
            Row(
                version=version,
                size=measured.get("size"),
                files=measured.get("files"),
                image_size=measured.get("image_size"),
                uploaded=release.uploaded if release else "",
                sha256=release.sha256 if release else None,
                image=release.image if release else None,
                marks=tuple(marks),
                good=tuple(c.state.config for c in goods),
                good_since=goods[0].state.since if goods else "",
                quarantined=quarantined,
                blocked=None if usable or not goods else goods[0].blocked,
                pick=choice.target is not None and choice.target.version == version,
            )
        )
    held = observed.hold.describe() if observed.hold is not None else None
    return Inventory(
        tuple(rows),
        choice.target.version if choice.target else None,
        choice.error,
        held,
    )


def _uploaded(observed: Observed, version: str) -> tuple[str, str]:
    release = observed.releases.get(version)
    return (release.uploaded if release else "", version)
