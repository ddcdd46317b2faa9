"""Deploy strategies behind one interface. A strategy knows how its desired state is laid out
on the host (which units, files and links), how to get there, what serves now, and what to
go back to on a host that has no good state recorded yet.

    single_slot   restart and symlink-swap: one backend unit, restarted in place
    blue_green    two colours behind Caddy: changes go to the idle colour, then a switch
"""

from __future__ import annotations

from typing import Protocol

from reconciler.observe.snapshot import GoodState, Observed
from reconciler.plan.actions import Action
from reconciler.spec.model import DesiredState


class Strategy(Protocol):
    config: str  # the desired configuration's fingerprint

    def actions(self, observed: Observed) -> list[Action]:
        """Everything that differs from the desired state, as actions with reasons."""
        ...

    def serving(self, observed: Observed) -> str | None:
        """The release that serves traffic now."""
        ...

    def baseline(self, observed: Observed) -> GoodState | None:
        """What serves now, as a state to go back to, when no good state is recorded."""
        ...


def for_desired(desired: DesiredState) -> Strategy:
    if desired.strategy == "blue-green":
        from reconciler.plan.strategies.blue_green import BlueGreen

        return BlueGreen(desired)
    from reconciler.plan.strategies.single_slot import SingleSlot

    return SingleSlot(desired)
