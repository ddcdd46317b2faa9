"""strategy: blue-green. Two backends (blue, green), each on its own port and release behind
its own symlink (/opt/<app>/blue -> releases/<v>); Caddy routes to one of them.

The colour to serve the desired release is the one already running it (so rolling back to a
release the idle colour still runs is a Caddy switch and nothing else), otherwise the colour
Caddy does not route to. The new release starts there and passes its health gate before the
validated Caddyfile switches traffic; the old colour then stays warm or stops.
"""

from __future__ import annotations

import posixpath
from dataclasses import replace

from reconciler.observe.snapshot import Observed, unit_path
from reconciler.plan.actions import Action, Phase, SetSymlink, Systemctl
from reconciler.plan.planner import (
    backend_health,
    backend_spec,
    caddy_actions,
    data_actions,
    env_file_actions,
    env_hash,
    env_reason,
    link_points_to,
    release_dir,
    render_caddyfile,
    retire_frontend,
    retire_unit,
    run_actions,
    running_release,
    unit_file_actions,
    upload_if_missing,
    want_release_dir,
)
from reconciler.render import caddyfile, units
from reconciler.spec.model import DesiredState

COLOURS = ("blue", "green")


def other(colour: str) -> str:
    return "green" if colour == "blue" else "blue"


def routed_colour(desired: DesiredState, observed: Observed) -> str | None:
    colour = caddyfile.routed_colour(observed.content(desired.proxy.caddyfile))
    return colour if colour in COLOURS else None


def runs_release(desired: DesiredState, observed: Observed, colour: str, release: str) -> bool:
    unit = observed.unit(desired.colour_unit(colour))
    return (
        unit.is_active
        and running_release(unit) == posixpath.basename(release)
        and link_points_to(observed, desired.colour_link(colour)) == release
    )


def choose_colour(desired: DesiredState, observed: Observed) -> str:
    want = release_dir(desired, desired.release.version)
    routed = routed_colour(desired, observed)
    running = [c for c in COLOURS if runs_release(desired, observed, c, want)]
    if running:
        return routed if routed in running else running[0]
    if routed is not None:
        return other(routed)
    for colour in COLOURS:  # nothing routed yet: prefer a colour that is not running
        if not observed.unit(desired.colour_unit(colour)).is_active:
            return colour
    return "blue"


def colour_unit_text(desired: DesiredState, colour: str, observed: Observed | None = None) -> str | None:
    """The colour's unit. A folder release runs from the colour's link, so the text is the same
    whatever the colour runs; an image release names its image, so for a colour that keeps an
    older release (`observed` given) it is that release's image, and None when unknown."""
    if observed is not None and desired.release.image:
        target = link_points_to(observed, desired.colour_link(colour))
        version = posixpath.basename(target) if target else None
        held = observed.releases.get(version) if version else None
        if held is None or held.image is None:
            return None
        desired = replace(desired, release=replace(desired.release, version=held.version, image=held.image))
    spec = backend_spec(
        desired, desired.colour_link(colour), desired.blue_green.port(colour), role=f"backend ({colour})"
    )
    return units.render_service(spec)


def actions(desired: DesiredState, observed: Observed) -> list[Action]:
    version = desired.release.version
    want = release_dir(desired, version)
    target = choose_colour(desired, observed)
    idle = other(target)
    out: list[Action] = []
    out += upload_if_missing(desired, observed, version)
    target_text = colour_unit_text(desired, target)
    idle_text = colour_unit_text(desired, idle, observed)
    assert target_text is not None
    out += unit_file_actions(desired, observed, desired.colour_unit(target), target_text)
    if idle_text is not None:
        out += unit_file_actions(desired, observed, desired.colour_unit(idle), idle_text)
    out += env_file_actions(desired, observed)
    why = f"{target} is the colour for {version}"
    out += _point(desired, observed, desired.colour_link(target), want, why)
    out += _run_colour(desired, observed, target, want, target_text)
    out += _idle_colour(desired, observed, idle, idle_text)
    static_root = f"{desired.colour_link(target)}/{desired.frontend.static_dir}"
    caddy_text = render_caddyfile(desired, desired.blue_green.port(target), static_root, colour=target)
    out += data_actions(desired, observed, [desired.colour_unit(c) for c in COLOURS])
    out += caddy_actions(desired, observed, caddy_text)
    out += _bookkeeping_links(desired, observed, want)
    out += retire_unit(desired, observed, desired.backend_unit, "the strategy is blue-green")
    out += retire_frontend(desired, observed)
    return out


def _point(
    desired: DesiredState, observed: Observed, link: str, want: str, why: str, phase: Phase = Phase.SWITCH
) -> list[Action]:
    now = link_points_to(observed, link)
    if now == want:
        return []
    was = f"points to {posixpath.basename(now)}" if now else "does not exist"
    return [
        SetSymlink(
            f"{posixpath.basename(link)} {was}; {why}",
            path=link,
            target_path=posixpath.relpath(want, desired.layout.root),
            phase=phase,
        )
    ]


def _run_colour(
    desired: DesiredState, observed: Observed, colour: str, release: str, text: str
) -> list[Action]:
    name = desired.colour_unit(colour)
    health = backend_health(desired, desired.blue_green.port(colour), name, posixpath.basename(release))
    return run_actions(
        observed.unit(name),
        text,
        want_release=want_release_dir(desired, release),
        want_env_hash=env_hash(desired),
        env_reason=env_reason(desired, observed),
        health=health,
        file_text=observed.content(unit_path(desired, name)),
    )


def _idle_colour(desired: DesiredState, observed: Observed, colour: str, text: str | None) -> list[Action]:
    """warm: keep running what its link names (unless quarantined); stop: not running."""
    name = desired.colour_unit(colour)
    unit = observed.unit(name)
    release = link_points_to(observed, desired.colour_link(colour))
    version = posixpath.basename(release) if release else None
    usable = version is not None and version in observed.releases and version not in observed.quarantine
    if desired.blue_green.idle == "warm" and usable and release is not None and text is not None:
        return _run_colour(desired, observed, colour, release, text)
    if not unit.is_active:
        return []
    if desired.blue_green.idle == "stop":
        why = f"idle colour {colour} is kept stopped (blue_green.idle: stop)"
    elif version in observed.quarantine:
        why = f"idle colour {colour} runs quarantined release {version}"
    else:
        why = f"idle colour {colour} has no release to run"
    return [Systemctl(why, verb="stop", unit=name, phase=Phase.RETIRE)]


def _bookkeeping_links(desired: DesiredState, observed: Observed, want: str) -> list[Action]:
    """current/previous mirror what Caddy serves, for people and tools reading the layout."""
    layout = desired.layout
    now = link_points_to(observed, layout.current)
    out: list[Action] = []
    keep = now is not None and now != want and posixpath.basename(now) in observed.releases
    if now is not None and keep and link_points_to(observed, layout.previous) != now:
        out.append(
            SetSymlink(
                f"{posixpath.basename(now)} served before the switch",
                path=layout.previous,
                target_path=posixpath.relpath(now, layout.root),
                phase=Phase.RETIRE,
            )
        )
    out += _point(desired, observed, layout.current, want, "Caddy serves it", phase=Phase.RETIRE)
    return out
