"""Caddy: the app's fragment this desired state wants, the main Caddyfile importing it, and
what it takes to make Caddy serve them. Several apps share one Caddy: each owns only its
fragment, and the agent validates the whole configuration, under a host-wide lock, before
anything is reloaded."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from reconciler.observe.snapshot import CADDY_UNIT, Observed
from reconciler.plan.actions import Action, LoadCaddy, Phase, Systemctl, WriteCaddyfile
from reconciler.render import caddyfile, caddymain
from reconciler.spec.model import DesiredState


def render_fragment(
    desired: DesiredState,
    backend_port: int,
    static_root: str,
    colour: str | None = None,
    maintenance: bool = False,
) -> str:
    """`maintenance`: switched on by hand on the host (`reconcile maintenance on`)."""
    static = desired.frontend.mode == "static"
    proxy = desired.proxy
    return caddyfile.render(
        caddyfile.Site(
            app=desired.app,
            address=proxy.site,
            backend_port=backend_port,
            health_path=desired.backend.health,
            static_root=static_root if static else None,
            frontend_port=None if static else desired.frontend.dev_port,
            colour=colour,
            ports=claimed_ports(desired),
            maintenance=proxy.maintenance or maintenance,
            maintenance_page=proxy.maintenance_page,
            backend_paths=proxy.backend_paths,
            private_paths=proxy.private_paths,
            spa=desired.frontend.spa,
            immutable_paths=desired.frontend.immutable_paths,
        )
    )


def claimed_ports(desired: DesiredState) -> tuple[int, ...]:
    ports = [desired.backend.port]
    if desired.strategy == "blue-green":
        ports += [desired.blue_green.blue_port, desired.blue_green.green_port]
    if desired.frontend.mode == "dev-server" and desired.frontend.dev_port:
        ports.append(desired.frontend.dev_port)
    return tuple(sorted(set(ports)))


def main_text(desired: DesiredState, observed: Observed) -> str | None:
    """The main Caddyfile once this app's fragment is imported (None: leave it as it is). A
    site of its own at this app's address is taken out only when adopting (blockers refuse
    the plan otherwise)."""
    path, apps = desired.proxy.caddyfile, desired.proxy.apps_dir
    have = observed.content(path)
    if have is None or caddymain.is_stock(have) or caddymain.owner(have) == desired.app:
        want = caddymain.render(apps)
    else:
        want = caddymain.adopt(have, desired.proxy.site, apps)
    return None if want == have else want


def caddy_actions(
    desired: DesiredState, observed: Observed, fragment: str, routes_to: tuple[str, ...]
) -> list[Action]:
    proxy = desired.proxy
    main, path = proxy.caddyfile, proxy.fragment(desired.app)
    caddy = observed.unit(CADDY_UNIT)
    out: list[Action] = []
    new_main = main_text(desired, observed)
    if new_main is not None:
        foreign = _foreign_main(desired, observed)
        have_main = observed.content(main)
        if foreign:
            why = f"{main} serves {proxy.site} itself: the site moves into {path} (adopted, a backup is kept)"
        elif have_main is not None and caddymain.is_stock(have_main):
            why = f"{main} is Caddy's stock welcome page: it now imports the apps' fragments"
        elif have_main is not None and caddymain.owner(have_main) == desired.app:
            why = f"{main} is {desired.app}'s whole Caddyfile (older reconciler): the site moves into {path}"
        elif have_main is not None:
            why = f"{main} does not import the apps' fragments"
        else:
            why = f"{main} does not exist"
        out.append(WriteCaddyfile(why, path=main, content=new_main, main=main, backup=foreign))
    have = observed.content(path)
    if have != fragment:
        why = f"{path} {text_change(have, fragment)}"
        out.append(WriteCaddyfile(why, path=path, content=fragment, routes_to=routes_to, main=main))
    loaded = hashlib.sha256(fragment.encode()).hexdigest()
    if out and caddy.is_active:
        out.append(
            LoadCaddy(
                "the Caddy configuration changed", verb="reload", path=main, unit=CADDY_UNIT, fragment=path
            )
        )
    elif caddy.is_active and observed.caddy_loaded_sha != loaded:
        why = f"Caddy has not loaded {path} since it was written"
        out.append(LoadCaddy(why, verb="reload", path=main, unit=CADDY_UNIT, fragment=path))
    if not caddy.is_active:
        why = f"{CADDY_UNIT} is {caddy.active}"
        out.append(LoadCaddy(why, verb="start", path=main, unit=CADDY_UNIT, fragment=path))
    if not caddy.is_enabled:
        why = f"{CADDY_UNIT} is {caddy.enabled or 'not enabled'}"
        out.append(Systemctl(why, verb="enable", unit=CADDY_UNIT).at(Phase.PROXY))
    return out


def _foreign_main(desired: DesiredState, observed: Observed) -> bool:
    have = observed.content(desired.proxy.caddyfile)
    return bool(
        have is not None
        and not caddymain.is_stock(have)
        and caddymain.owner(have) is None
        and caddymain.conflicts(have, desired.proxy.site)
    )


def blockers(desired: DesiredState, observed: Observed, adopt: bool) -> Iterable[str]:
    """Another app's site or ports, or a main Caddyfile that serves this app's address."""
    mine = desired.proxy.fragment(desired.app)
    ports = set(claimed_ports(desired))
    for path, text in sorted(observed.fragments.items()):
        claims = caddyfile.claims_of(text)
        if path == mine or claims is None or claims.app == desired.app:
            continue
        if caddymain.serves(caddymain.Block(0, 0, (claims.site,)), desired.proxy.site):
            yield (
                f"site {desired.proxy.site} is already served by app '{claims.app}' ({path}): "
                f"give {desired.app} another proxy.site"
            )
        taken = sorted(ports & set(claims.ports))
        if taken:
            yield (
                f"port {', '.join(map(str, taken))} is already used by app '{claims.app}' ({path}): "
                f"give {desired.app} other ports"
            )
    have = observed.content(desired.proxy.caddyfile)
    if not adopt and _foreign_main(desired, observed) and have is not None:
        lines = ", ".join(str(b.first + 1) for b in caddymain.conflicts(have, desired.proxy.site))
        yield (
            f"{desired.proxy.caddyfile} already serves {desired.proxy.site} itself (line {lines}), "
            "written by someone else: run with --adopt to move that site into the reconciler's "
            f"hands (a dated backup is kept), or give {desired.app} another proxy.site"
        )


def text_change(old: str | None, new: str) -> str:
    """A short account of how a managed file differs: the one changed line, or how many."""
    if old is None:
        return "does not exist"
    a = [ln.strip() for ln in old.splitlines()]
    b = [ln.strip() for ln in new.splitlines()]
    if len(a) == len(b):
        pairs = [(x, y) for x, y in zip(a, b) if x != y]
        if len(pairs) == 1:
            return f"differs: {pairs[0][0]!r} -> {pairs[0][1]!r}"
    return "differs from the rendered one (edited by hand, or the desired state changed)"
