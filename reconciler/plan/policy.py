"""What the agent does when a step fails: decided here, for every kind of step, once.

    quarantine  a health gate failed: only a gate proves a configuration unhealthy, so only a
                gate quarantines it; then back to the last good state
    stop        an idle colour's gate failed: it serves nothing, so it is stopped and the plan
                goes on (nothing is quarantined: see agent/apply.py)
    rollback    a step between the first write and the proxy switch failed (the host's fault,
                perhaps: a start systemd refused is not a verdict on the configuration): the
                host is between two states, so it goes back to the last good one
    report      anything else (staging, retiring, pruning, recording): stop and say what failed

Steps of a rollback are not given a policy: the first one that fails ends the rollback and
is reported (reconciler/agent/apply.py), and the next run starts again from what it left.
"""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.plan.actions import Action, CheckHealth, OnFailure, Phase

# Phases from the first write to the proxy switch: a failure there leaves the host between
# two states.
_BETWEEN_STATES = range(Phase.WRITE, Phase.PROXY + 1)


def on_failure(action: Action) -> OnFailure:
    if isinstance(action, CheckHealth):
        return "stop" if action.idle else "quarantine"
    if action.phase in _BETWEEN_STATES:
        return "rollback"
    return "report"


def with_policy(actions: Iterable[Action]) -> list[Action]:
    return [a.failing(on_failure(a)) for a in actions]


def undoes(action: Action) -> bool:
    """A failure of this step sends the host back to its last good state."""
    return action.on_failure in ("rollback", "quarantine")
