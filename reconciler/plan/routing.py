"""Where Caddy sends the app's traffic, from what Caddy runs (its loaded configuration, as its
admin API reported it in the observation), mapped to the app's units by the ports they listen
on. Every "what serves", "what Caddy routes to" and "is it loaded" decision of the planner,
the rollback and `status` is made here, from that one fact: never from the fragment on disk
(a run killed before reloading leaves it newer than what serves) and never from a note of the
reconciler's (another app's reload, a Caddy restart, a reboot or an admin may load anything).
"""

from __future__ import annotations

from reconciler.agent.caddyconfig import runs
from reconciler.observe.snapshot import CADDY_UNIT, Observed, unit_path
from reconciler.plan import releases
from reconciler.render import caddyfile, units
from reconciler.spec.model import DesiredState

COLOURS = ("blue", "green")


def _port_in(text: str | None) -> int | None:
    """The port a unit of ours listens on, from its file (`Environment=PORT=`)."""
    for key, value in units.parse(text or "").get("Service", []):
        if key == "Environment" and value.startswith("PORT=") and value[5:].isdigit():
            return int(value[5:])
    return None


def unit_ports(desired: DesiredState, observed: Observed) -> dict[int, str]:
    """The app's units by the ports they listen on, or would: a port routed to a unit that
    does not run is routed to a unit without a gate record too. Who listens now wins (each
    running unit's port, as its unit file says), then the ports the desired state gives the
    units it runs, then the ports stopped units' files name, then every unit's default port.
    Ports another app's fragment claims are left out."""
    d = desired
    if d.strategy == "blue-green":
        wanted = [(d.colour_unit(c), d.blue_green.port(c)) for c in COLOURS]
    else:
        wanted = [(d.backend_unit, d.backend.port)]
        if d.frontend.mode == "dev-server" and d.frontend.dev_port:
            wanted.append((d.frontend_unit, d.frontend.dev_port))
    on_disk, running = [], []
    for unit, default in _defaults(d):
        port = _port_in(observed.content(unit_path(d, unit)))
        if port is not None:
            on_disk.append((unit, port))
        if observed.unit(unit).is_active or observed.unit(unit).is_crashing:
            running.append((unit, default if port is None else port))
    mine = d.proxy.fragment(d.app)
    taken = set()
    for path, text in observed.fragments.items():
        claims = caddyfile.claims_of(text)
        if path != mine and claims is not None and claims.app != d.app:
            taken |= set(claims.ports)
    layers = [*_defaults(d), *on_disk, *wanted, *running]
    return {port: unit for unit, port in layers if port not in taken}


def _defaults(d: DesiredState) -> list[tuple[str, int]]:
    out = [(d.backend_unit, d.backend.port), *((d.colour_unit(c), d.blue_green.port(c)) for c in COLOURS)]
    if d.frontend.dev_port:
        out.append((d.frontend_unit, d.frontend.dev_port))
    return out


def caddy_runs(observed: Observed) -> bool:
    return observed.unit(CADDY_UNIT).is_active and observed.caddy.answered


def routed_units(desired: DesiredState, observed: Observed) -> tuple[str, ...]:
    """The app's units Caddy sends traffic to now (none while Caddy does not run)."""
    if not caddy_runs(observed):
        return ()
    ports = unit_ports(desired, observed)
    return tuple(sorted({ports[p] for p in observed.caddy.upstreams if p in ports}))


def routed_colours(desired: DesiredState, observed: Observed) -> tuple[str, ...]:
    routed = routed_units(desired, observed)
    return tuple(c for c in COLOURS if desired.colour_unit(c) in routed)


def serving_unit(desired: DesiredState, observed: Observed) -> str | None:
    """The backend unit (or colour) Caddy sends the app's traffic to, when it is one."""
    backends = [u for u in routed_units(desired, observed) if u != desired.frontend_unit]
    return backends[0] if len(backends) == 1 else None


def serving_release(desired: DesiredState, observed: Observed) -> str | None:
    """The release that serves traffic: the one the routed backend's process runs."""
    unit = serving_unit(desired, observed)
    return releases.running_release(observed.unit(unit)) if unit is not None else None


def loaded(desired: DesiredState, observed: Observed, text: str | None) -> bool:
    """Caddy runs this fragment for the app (None: no fragment of the app's): see
    agent/caddyconfig.py `runs`, the one rule the agent applies too."""
    if not caddy_runs(observed):
        return False
    seen = {
        "answered": observed.caddy.answered,
        "upstreams": sorted(observed.caddy.upstreams),
        "marks": dict(observed.caddy.marks),
    }
    return runs(seen, desired.app, text, unit_ports(desired, observed))


def blockers(desired: DesiredState, observed: Observed) -> list[str]:
    """What Caddy runs cannot be known, or it is not one thing."""
    out = []
    if observed.unit(CADDY_UNIT).is_active and not observed.caddy.answered:
        out.append(
            f"Caddy runs, but {observed.caddy.error or 'its admin API did not answer'}: the reconciler "
            "reads what Caddy serves from its admin API (it must be on, as it is by default); fix "
            "that and run again"
        )
    out += _port_clashes(desired, observed)
    if desired.strategy == "blue-green" and len(routed_colours(desired, observed)) == 2:
        runs = [
            c for c in COLOURS if observed.unit(desired.colour_unit(c)).release == desired.release.version
        ]
        if not runs:
            out.append(
                "Caddy sends the app's traffic to both colours, blue and green (its configuration "
                "was changed outside the reconciler), so neither can be restarted safely: point "
                f"{desired.proxy.fragment(desired.app)} at one colour and reload Caddy, or deploy the "
                "release one of them runs, and run again"
            )
    return out


def _port_clashes(desired: DesiredState, observed: Observed) -> list[str]:
    """A unit the desired state (re)starts on a port another unit of the app listens on now
    (backend.port changed under blue-green, or a strategy switch): it could not bind it."""
    d = desired
    if d.strategy == "blue-green":
        wanted = [(d.colour_unit(c), d.blue_green.port(c)) for c in COLOURS]
    else:
        wanted = [(d.backend_unit, d.backend.port)]
    out = []
    for unit, port in wanted:
        for other in (d.backend_unit, d.frontend_unit, *(d.colour_unit(c) for c in COLOURS)):
            listens = _port_in(observed.content(unit_path(d, other)))
            if other != unit and observed.unit(other).is_active and listens == port:
                out.append(
                    f"{unit} would listen on port {port}, where {other} listens now: keep the "
                    "ports the running units use for this deploy (backend.port, "
                    "blue_green.blue_port/green_port) and change them in a later one"
                )
    return out
