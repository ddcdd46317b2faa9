"""Caddy: the Caddyfile this desired state wants, and what it takes to make Caddy serve it."""

from __future__ import annotations

import hashlib

from reconciler.observe.snapshot import CADDY_UNIT, Observed
from reconciler.plan.actions import Action, LoadCaddy, Phase, Systemctl, WriteCaddyfile
from reconciler.render import caddyfile
from reconciler.spec.model import DesiredState


def render_caddyfile(
    desired: DesiredState, backend_port: int, static_root: str, colour: str | None = None
) -> str:
    static = desired.frontend.mode == "static"
    return caddyfile.render(
        caddyfile.Site(
            app=desired.app,
            address=desired.proxy.site,
            backend_port=backend_port,
            health_path=desired.backend.health,
            static_root=static_root if static else None,
            frontend_port=None if static else desired.frontend.dev_port,
            colour=colour,
        )
    )


def caddy_actions(
    desired: DesiredState, observed: Observed, text: str, routes_to: tuple[str, ...]
) -> list[Action]:
    path = desired.proxy.caddyfile
    caddy = observed.unit(CADDY_UNIT)
    out: list[Action] = []
    have = observed.content(path)
    sha = hashlib.sha256(text.encode()).hexdigest()
    if have != text:
        out.append(
            WriteCaddyfile(f"{path} {text_change(have, text)}", path=path, content=text, routes_to=routes_to)
        )
        if caddy.is_active:
            out.append(LoadCaddy("the Caddyfile changed", verb="reload", path=path, unit=CADDY_UNIT))
    elif caddy.is_active and observed.caddy_loaded_sha != sha:
        why = "Caddy has not loaded the Caddyfile since it was written"
        out.append(LoadCaddy(why, verb="reload", path=path, unit=CADDY_UNIT))
    if not caddy.is_active:
        out.append(LoadCaddy(f"{CADDY_UNIT} is {caddy.active}", verb="start", path=path, unit=CADDY_UNIT))
    if not caddy.is_enabled:
        why = f"{CADDY_UNIT} is {caddy.enabled or 'not enabled'}"
        out.append(Systemctl(why, verb="enable", unit=CADDY_UNIT, phase=Phase.PROXY))
    return out


def text_change(old: str | None, new: str) -> str:
    """A short account of how a managed file differs: the one changed line, or how many."""
    if old is None:
        return "does not exist"
    a = [ln.strip() for ln in old.splitlines()]
    b = [ln.strip() for ln in new.splitlines()]
    if len(a) == len(b):
        pairs = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
        if len(pairs) == 1:
            return f"differs: {pairs[0][0]!r} -> {pairs[0][1]!r}"
    return "differs from the rendered one (edited by hand, or the desired state changed)"
