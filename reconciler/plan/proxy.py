"""Caddy: the app's fragment this desired state wants, the main Caddyfile importing it, and
what it takes to make Caddy serve them. Several apps share one Caddy: each owns only its
fragment, and the agent validates the whole configuration, under a host-wide lock, before
anything is reloaded."""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.observe.snapshot import CADDY_UNIT, Observed
from reconciler.plan import routing
from reconciler.plan.actions import Action, LoadCaddy, Phase, RemoveFile, Systemctl, WriteCaddyfile, WriteFile
from reconciler.render import caddyfile, caddymain
from reconciler.spec.model import DesiredState


def render_fragment(
    desired: DesiredState, backend_port: int, static_root: str, colour: str | None = None
) -> str:
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
            maintenance_flag=proxy.maintenance_flag(desired.app),
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


def ports(desired: DesiredState, observed: Observed) -> dict[str, str]:
    """The app's units by port, as the agent's Caddy steps take them."""
    return {str(p): u for p, u in sorted(routing.unit_ports(desired, observed).items())}


def load(desired: DesiredState, observed: Observed, why: str, *, unless_loaded: bool = False) -> LoadCaddy:
    return LoadCaddy(
        why,
        path=desired.proxy.caddyfile,
        unit=CADDY_UNIT,
        fragment=desired.proxy.fragment(desired.app),
        app=desired.app,
        ports=ports(desired, observed),
        unless_loaded=unless_loaded,
    )


def write(
    desired: DesiredState, observed: Observed, why: str, path: str, content: str | None, **kw: bool
) -> WriteCaddyfile:
    return WriteCaddyfile(
        why, path=path, content=content, main=desired.proxy.caddyfile, ports=ports(desired, observed), **kw
    )


def caddy_actions(desired: DesiredState, observed: Observed, fragment: str) -> list[Action]:
    proxy = desired.proxy
    main, path = proxy.caddyfile, proxy.fragment(desired.app)
    caddy = observed.unit(CADDY_UNIT)
    out: list[Action] = []
    have = observed.content(path)
    if have != fragment:
        why = f"{path} {text_change(have, fragment)}"
        out.append(write(desired, observed, why, path, fragment))
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
        # The fragment goes first, so that when the main file starts importing it, it already
        # routes where it should; a main file that serves the site itself (adopted) goes first,
        # or the two would serve one address.
        main_write = write(desired, observed, why, main, new_main, backup=foreign)
        out = [main_write, *out] if foreign else [*out, main_write]
    if not caddy.is_active:
        out.append(load(desired, observed, f"{CADDY_UNIT} is {caddy.active}: it is started"))
    elif out:
        out.append(load(desired, observed, "the Caddy configuration changed"))
    elif not routing.loaded(desired, observed, fragment):
        out.append(load(desired, observed, f"Caddy does not run {path} as it is on disk"))
    if not caddy.is_enabled:
        why = f"{CADDY_UNIT} is {caddy.enabled or 'not enabled'}"
        out.append(Systemctl(why, verb="enable", unit=CADDY_UNIT).at(Phase.PROXY))
    return out


def maintenance_actions(
    desired: DesiredState, observed: Observed, by_hand: bool | None = None
) -> list[Action]:
    """The maintenance switch (a file Caddy looks for on every request, see render/caddyfile.py)
    is on exactly while the desired state or a hand (`reconcile maintenance on`) says so.
    Part of every plan, whatever else the host is doing: a quarantined release, a held
    rollback, a run with nothing else to do. `by_hand`: the hand record about to be written."""
    hand = observed.maintenance is not None if by_hand is None else by_hand
    on = desired.proxy.maintenance or hand
    flag = desired.proxy.maintenance_flag(desired.app)
    have = observed.file(flag)
    why = "proxy.maintenance is true" if desired.proxy.maintenance else "maintenance was switched on by hand"
    if on and have is None:
        content = f"maintenance is on: {why}\n"
        return [WriteFile(why, path=flag, content=content, mode=0o644).at(Phase.STAGE)]
    if not on and have is not None:
        return [RemoveFile("maintenance is off", path=flag).at(Phase.STAGE)]
    return []


def upgrade_fragment(desired: DesiredState, text: str) -> str:
    """A fragment recorded by an older reconciler, with the maintenance switch and the mark
    every fragment carries now (a rollback to it must not lose maintenance)."""
    if caddyfile.mark_of(text, desired.app) is not None or desired.proxy.site + " {" not in text:
        return text
    site = caddyfile.Site(
        app=desired.app,
        address=desired.proxy.site,
        backend_port=0,
        health_path=desired.backend.health,
        maintenance_flag=desired.proxy.maintenance_flag(desired.app),
        maintenance_page=None,
    )
    return caddyfile.with_switch(text, site)


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
