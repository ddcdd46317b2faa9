"""Adopting a host set up by hand: files at the places this app's files go that the
reconciler did not write (a unit, an environment file, the main Caddyfile's own site for this
app's address). They are never replaced silently: the plan stops and names them, and with
--adopt every one is replaced with a dated backup kept on the host, and the apply is recorded
as an adoption."""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.observe.snapshot import Observed, unit_path
from reconciler.plan.actions import Action, RemoveFile, WriteCaddyfile, WriteFile
from reconciler.spec.model import DesiredState

COLOURS = ("blue", "green")
MARK = "# Managed by reconciler"


def is_foreign(text: str | None) -> bool:
    """Something is there, and the reconciler did not write it."""
    return text is not None and not text.startswith(MARK)


def paths(desired: DesiredState) -> list[str]:
    """Where this app's own unit and environment files go, whatever the strategy."""
    names = [desired.backend_unit, desired.frontend_unit, *(desired.colour_unit(c) for c in COLOURS)]
    envs = [desired.layout.env_file, *(desired.colour_env_file(c) for c in COLOURS)]
    return [unit_path(desired, n) for n in names] + envs


def foreign(desired: DesiredState, observed: Observed) -> list[str]:
    return [p for p in paths(desired) if is_foreign(observed.content(p))]


def blockers(desired: DesiredState, observed: Observed) -> Iterable[str]:
    for path in foreign(desired, observed):
        yield (
            f"{path} exists and was not written by the reconciler: run with --adopt to replace it "
            "(a dated backup is kept on the host), or move it away"
        )


def adopted(actions: Iterable[Action]) -> tuple[str, ...]:
    """The files this plan replaces or removes with a backup kept."""
    return tuple(
        a.path for a in actions if isinstance(a, (WriteFile, RemoveFile, WriteCaddyfile)) and a.backup
    )
