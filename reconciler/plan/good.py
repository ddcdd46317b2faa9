"""The last good state: what the host records once a state serves with every process gated,
and what a rollback restores. Kept complete (unit files, environment files, links, the
Caddyfile, the gates) so going back restores the configuration too, not only the release."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from reconciler.observe.snapshot import GateParams, GoodState, Observed, RecordedFile, unit_path
from reconciler.plan.actions import Action, CheckHealth, RecordGood
from reconciler.render.units import parse as parse_unit
from reconciler.spec.model import DesiredState


@dataclass(frozen=True)
class GoodParts:
    """What a strategy's desired state consists of, as a good state would record it."""

    files: Mapping[str, str]  # path -> content: unit files and environment files
    links: Mapping[str, str]  # path -> target as written
    gates: Mapping[str, CheckHealth]  # the units that serve, and how they are gated
    caddy_text: str


def record_actions(desired: DesiredState, observed: Observed, parts: GoodParts, config: str) -> list[Action]:
    from reconciler.plan import proxy

    gates = {unit: gate.params() for unit, gate in parts.gates.items()}
    latest = observed.good[0] if observed.good else None
    files = {**parts.files, desired.proxy.fragment(desired.app): parts.caddy_text}
    if latest is not None and (
        latest.config == config
        and {p: f.content if f else None for p, f in latest.files.items()} == files
        and dict(latest.links) == dict(parts.links)
        and dict(latest.gates) == gates
    ):
        return []
    if latest is None:
        reason = "no good state is recorded on this host yet"
    elif latest.config != config:
        reason = f"the last good state recorded is {latest.version} ({latest.config})"
    else:
        reason = "the recorded good state has other files than the ones that now serve"
    return [
        RecordGood(
            reason,
            config=config,
            version=desired.release.version,
            image=desired.release.image,
            strategy=desired.strategy,
            files=tuple(parts.files),
            links=tuple(parts.links),
            gates=gates,
            caddyfile=desired.proxy.fragment(desired.app),
            ports=proxy.ports(desired, observed),
        )
    ]


def baseline(
    desired: DesiredState,
    observed: Observed,
    *,
    version: str,
    config: str,
    files: list[str],
    links: list[str],
    gates: Mapping[str, GateParams],
    strategy: str,
) -> GoodState:
    """What serves now, taken as the state to go back to on a host that has no good record
    yet (set up by hand, or by an older reconciler): its files as they are on disk, the main
    Caddyfile included, and the app's fragment absent if it is."""
    fragment = desired.proxy.fragment(desired.app)
    recorded: dict[str, RecordedFile | None] = {}
    for path in [*files, desired.proxy.caddyfile, fragment]:
        f = observed.file(path)
        if f is not None and f.kind == "file" and f.content is not None:
            recorded[path] = RecordedFile(f.content, f.mode or 0o644)
        elif path in (fragment, *files):
            recorded[path] = None
    targets = {path: link.target for path in links if (link := observed.link(path)) and link.target}
    return GoodState(config, version, None, strategy, recorded, targets, gates, fragment)


def serving_baseline(desired: DesiredState, observed: Observed) -> GoodState | None:
    """What serves now, as a state to go back to: the unit Caddy routes the app's traffic to
    (the backend, or a colour, whatever the desired strategy is), with its files as they are
    on disk. For a host that has no good state recorded (set up by hand, or by an older
    reconciler), and for recording one a killed run did not get to."""
    from reconciler.plan import releases, routing, units

    d = desired
    name = routing.serving_unit(d, observed)
    if name is None:
        return None
    unit = observed.unit(name)
    version = releases.running_release(unit)
    if version is None or (unit.release is not None and version not in observed.releases):
        return None
    text = observed.content(unit_path(d, name)) or ""
    env_files = [v.lstrip("-") for k, v in parse_unit(text).get("Service", []) if k == "EnvironmentFile"]
    colour = next((c for c in routing.COLOURS if d.colour_unit(c) == name), None)
    if colour is not None:
        if version not in observed.releases:
            return None
        gate = units.backend_gate(d, name, d.blue_green.port(colour), version)
        names, links, strategy = [name], [d.colour_link(colour), d.layout.current], "blue-green"
    else:
        gate = units.backend_gate(d, name, d.backend.port, version)
        if version not in observed.releases:  # not one of ours: it names no version we know
            gate = replace(gate, expect_version=None)
            version = f"the setup found on the host ({unit.cwd})"
        names = [n for n in (name, d.frontend_unit) if observed.unit(n).is_active]
        env_files = sorted({*env_files, d.layout.env_file})
        links = [d.layout.current]
        strategy = d.strategy if d.strategy != "blue-green" else "symlink-swap"
    return baseline(
        d,
        observed,
        version=version,
        config=unit.config or "",
        files=[*(unit_path(d, n) for n in names), *env_files],
        links=links,
        gates={name: gate.params()},
        strategy=strategy,
    )
