"""strategy: blue-green. Two backends (blue, green), each on its own port, with its own unit,
environment file and symlink (/opt/<app>/blue -> releases/<v>); Caddy routes to one.

Every change that needs a process restart (release, env, command, image, unit) goes to the
colour Caddy does not route to: it is configured, started and gated there, and only then does
Caddy switch. The live colour is never restarted. The colour to serve the desired state is
one already running it (rolling back to what the idle colour still runs is a Caddy switch and
nothing else), otherwise the idle one. The colour left behind stays warm, unless it is told to
stop, crashes, or runs a configuration that failed.
"""

from __future__ import annotations

import posixpath

from reconciler.observe.snapshot import Observed, unit_path
from reconciler.plan import (
    config,
    data,
    good,
    identity,
    images,
    proxy,
    releases,
    routing,
    services,
    tasks,
    units,
)
from reconciler.plan.actions import Action, CheckHealth, Phase, SetSymlink, Systemctl
from reconciler.plan.units import retire_unit
from reconciler.render import units as unit_files
from reconciler.spec.model import DesiredState

COLOURS = ("blue", "green")


def other(colour: str) -> str:
    return "green" if colour == "blue" else "blue"


def routed_colour(desired: DesiredState, observed: Observed) -> str | None:
    """The colour Caddy sends traffic to now, as Caddy says (None: neither, or both)."""
    routed = routing.routed_colours(desired, observed)
    return routed[0] if len(routed) == 1 else None


class BlueGreen:
    def __init__(
        self, desired: DesiredState, runtime: str | None = None, run_as: tuple[int, int] | None = None
    ) -> None:
        self.desired = desired
        self.runtime = identity.runtime_for(desired, runtime) or "podman"
        self.run_as = run_as if desired.release.image else None
        self.config = identity.fingerprint(desired, runtime, self.run_as)
        self.release_dir = releases.release_dir(desired, desired.release.version)

    def text(self, colour: str) -> str:
        return services.colour_text(self.desired, colour, self.runtime, self.run_as)

    def gate(self, colour: str, version: str | None = None) -> CheckHealth:
        d = self.desired
        unit = d.colour_unit(colour)
        return units.backend_gate(d, unit, d.blue_green.port(colour), version or d.release.version)

    def runs_desired(self, observed: Observed, colour: str) -> bool:
        unit = observed.unit(self.desired.colour_unit(colour))
        return (
            unit.is_active
            and unit.config == self.config
            and unit.environ.get(unit_files.HASH_VAR) == unit_files.marker_of(self.text(colour))
            and releases.link_points_to(observed, self.desired.colour_link(colour)) == self.release_dir
        )

    def choose_colour(self, observed: Observed) -> str:
        """A colour that already runs the desired state (the routed one first: nothing to do);
        else one Caddy does not route to. Never a routed colour that must be restarted (with
        both routed and neither running it, routing.blockers stops the plan)."""
        routed = routing.routed_colours(self.desired, observed)
        running = [c for c in COLOURS if self.runs_desired(observed, c)]
        for colour in (*[c for c in running if c in routed], *running):
            return colour
        idle = [c for c in COLOURS if c not in routed]
        for colour in idle:  # prefer a colour that is not running
            if not observed.unit(self.desired.colour_unit(colour)).is_active:
                return colour
        return idle[0] if idle else "blue"

    def caddy_text(self, colour: str) -> str:
        d = self.desired
        static_root = images.static_root(d, d.colour_link(colour))
        return proxy.render_fragment(d, d.blue_green.port(colour), static_root, colour)

    def actions(self, observed: Observed) -> list[Action]:
        d = self.desired
        target = self.choose_colour(observed)
        routed = routing.routed_colours(d, observed)
        name, env_file = d.colour_unit(target), d.colour_env_file(target)
        text = self.text(target)
        out: list[Action] = releases.upload_if_missing(d, observed)
        out += releases.shared_actions(d, observed)
        out += images.frontend_actions(d, observed)
        out += units.unit_file_actions(d, observed, name, text)
        out += config.env_file_actions(d, observed, env_file, self.config)
        out += _point(
            d,
            observed,
            d.colour_link(target),
            self.release_dir,
            f"{target} is the colour for {d.release.version}",
        )
        out += units.run_actions(
            d, observed, name, text, self.gate(target), config=self.config, env_file=env_file
        )
        out += self._left_behind(observed, other(target))
        serving = routing.serving_release(d, observed)
        leaving = {serving} if serving and routed != (target,) else set()
        out += data.data_actions(d, observed, [d.colour_unit(c) for c in COLOURS], leaving)
        spec = services.backend_spec(
            d, self.release_dir, d.blue_green.port(target), env_file, runtime=self.runtime, run_as=self.run_as
        )
        out += tasks.task_actions(d, observed, spec, self.config, serving, out)
        fragment = self.caddy_text(target)
        out += proxy.caddy_actions(d, observed, fragment)
        out += _bookkeeping_links(d, observed, self.release_dir)
        out += retire_unit(d, observed, d.backend_unit, "the strategy is blue-green")
        out += retire_unit(d, observed, d.frontend_unit, "the frontend is served as static files")
        parts = good.GoodParts(
            files={unit_path(d, name): text, env_file: identity.env_text(d, self.config)},
            links={
                d.colour_link(target): releases.relative(d, self.release_dir),
                d.layout.current: releases.relative(d, self.release_dir),
            },
            gates={name: self.gate(target)},
            caddy_text=fragment,
        )
        out += good.record_actions(d, observed, parts, self.config)
        return out

    def _left_behind(self, observed: Observed, colour: str) -> list[Action]:
        """The colour not chosen: never restarted or rewritten; it stays warm as it is, gated
        if its process has no gate record (after the switch, when it served until then: a
        reboot leaves both colours without one), and is stopped when it must not run."""
        d = self.desired
        name = d.colour_unit(colour)
        unit = observed.unit(name)
        if unit.is_crashing:
            why = f"idle colour {colour} is {units.describe_state(unit)}: stopped so it does not loop"
            return [Systemctl(why, verb="stop", unit=name)]
        if not unit.is_active:
            return []
        if d.blue_green.idle == "stop":
            return [
                Systemctl(
                    f"idle colour {colour} is kept stopped (blue_green.idle: stop)",
                    verb="stop",
                    unit=name,
                )
            ]
        entry = observed.quarantined(unit.config or "", unit.release or "") if unit.config else None
        if entry is not None:
            why = f"idle colour {colour} runs a configuration that failed ({unit.release}: {entry.reason})"
            return [Systemctl(why, verb="stop", unit=name)]
        # Gated after the switch (phase RETIRE): whether Caddy routes to it now or not, it is
        # idle by then, so its gate failing only stops it.
        if not observed.gated(name):
            version = unit.release or ""
            gate = units.with_reason(self.gate(colour, version), f"{units.NOT_GATED} (idle colour {colour})")
            return [_soft(gate)]
        return []


def _soft(gate: CheckHealth) -> CheckHealth:
    """The gate of a colour that serves nothing: a failure stops it (plan/policy.py)."""
    from dataclasses import replace

    return replace(gate, idle=True).at(Phase.RETIRE)


def _point(
    desired: DesiredState, observed: Observed, link: str, want: str, why: str, phase: Phase = Phase.SWITCH
) -> list[Action]:
    now = releases.link_points_to(observed, link)
    if now == want:
        return []
    was = f"points to {posixpath.basename(now)}" if now else "does not exist"
    return [
        SetSymlink(
            f"{posixpath.basename(link)} {was}; {why}",
            path=link,
            target_path=releases.relative(desired, want),
        ).at(phase)
    ]


def _bookkeeping_links(desired: DesiredState, observed: Observed, want: str) -> list[Action]:
    """current/previous mirror what Caddy serves, for people and tools reading the layout."""
    layout = desired.layout
    now = releases.link_points_to(observed, layout.current)
    out: list[Action] = []
    keep = now is not None and now != want and posixpath.basename(now) in observed.releases
    if now is not None and keep and releases.link_points_to(observed, layout.previous) != now:
        out.append(
            SetSymlink(
                f"{posixpath.basename(now)} served before the switch",
                path=layout.previous,
                target_path=releases.relative(desired, now),
            ).at(Phase.RETIRE)
        )
    out += _point(desired, observed, layout.current, want, "Caddy serves it", phase=Phase.RETIRE)
    return out
