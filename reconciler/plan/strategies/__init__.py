"""Deploy strategies behind one interface. A strategy knows how its desired state is laid out
on the host (which units, files and links) and how to get there; what serves now is read
from Caddy for every strategy alike (plan/routing.py), and so is what a host with no good
state recorded goes back to (plan/good.py).

    single_slot   restart and symlink-swap: one backend unit, restarted in place
    blue_green    two colours behind Caddy: changes go to the idle colour, then a switch
"""

from __future__ import annotations

from typing import Protocol

from reconciler.observe.snapshot import Observed
from reconciler.plan.actions import Action
from reconciler.spec.model import DesiredState


class Strategy(Protocol):
    config: str  # the desired configuration's fingerprint (plan/identity.py)

    def actions(self, observed: Observed) -> list[Action]:
        """Everything that differs from the desired state, as actions with reasons."""
        ...


def for_host(desired: DesiredState, observed: Observed) -> Strategy:
    """The strategy for this host: its configuration's identity includes the container
    runtime the host resolved for an image release."""
    from reconciler.plan.images import run_as, runtime_of

    runtime = runtime_of(desired, observed) if desired.release.image else None
    return for_desired(desired, runtime, run_as(desired, observed))


def for_desired(
    desired: DesiredState, runtime: str | None = None, run_as: tuple[int, int] | None = None
) -> Strategy:
    """`runtime`, `run_as`: what the host resolved for an image release (the container runtime,
    and backend.user's uid and gid)."""
    if desired.strategy == "blue-green":
        from reconciler.plan.strategies.blue_green import BlueGreen

        return BlueGreen(desired, runtime, run_as)
    from reconciler.plan.strategies.single_slot import SingleSlot

    return SingleSlot(desired, runtime, run_as)
