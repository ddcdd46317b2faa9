"""When a process counts as gated: one rule, used by the agent on the host, by the planner
on the observation, and by the tests' model host."""

from __future__ import annotations

ACTIVE = ("active", "reloading")


def gate_holds(active: str, invocation: str, recorded: str | None) -> bool:
    """The unit runs, and the process running now is the one that passed its gate: systemd
    gives every start a new invocation id, automatic restarts after a crash included."""
    return active in ACTIVE and bool(invocation) and recorded == invocation
