"""What one pass did on one host, in one value: what notifications and metrics are made of.

Built from the engine's Outcome (or the error that ended the pass, which carries the
latest Outcome it had), so it says what the host serves as last seen whatever the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.engine.once import Outcome
from reconciler.errors import ReconcilerError
from reconciler.observe.snapshot import Hold, Pause
from reconciler.plan.planner import serving_release, serving_since
from reconciler.spec.model import DesiredState

# Results, in the words of --json and the fleet summary.
NOOP, PENDING, CONVERGED, ROLLED_BACK, QUARANTINED, FAILED, SKIPPED, PAUSED, HELD = (
    "noop",
    "changes_pending",
    "converged",
    "rolled_back",
    "quarantined",
    "failed",
    "not_reached",
    "paused",
    "held",  # `reconcile rollback` holds the host: left there, drift of that state corrected
)


@dataclass(frozen=True)
class HostReport:
    app: str
    host: str  # the host's name (a fleet's `name:`, or the target's host)
    target: str
    result: str
    version: str  # the desired release
    serving: str | None = None  # what serves after the pass, as last observed
    serving_since: str | None = None
    previous: str | None = None  # what served before the pass
    actions: tuple[Mapping[str, str], ...] = ()  # the plan's actions (applied when `applied`)
    applied: bool = False
    drift: bool = False  # the host had already served this exact configuration: nothing new
    error: str | None = None
    rolled_back_to: str | None = None
    quarantined: int = 0  # configurations quarantined on the host
    paused: Pause | None = None
    hold: Hold | None = None
    seconds: float = 0.0
    observed: bool = field(default=False)  # the host was observed at all


def result_of(error: ReconcilerError) -> str:
    from reconciler.errors import Held, Paused, Quarantined, RolledBack

    if isinstance(error, RolledBack):
        return ROLLED_BACK
    if isinstance(error, Held):
        return HELD
    if isinstance(error, Quarantined):
        return QUARANTINED
    if isinstance(error, Paused):
        return PAUSED
    return FAILED


def host_report(
    desired: DesiredState,
    host: str,
    result: str,
    outcome: Outcome | None,
    error: ReconcilerError | None = None,
    seconds: float = 0.0,
) -> HostReport:
    if outcome is None and error is not None and isinstance(error.outcome, Outcome):
        outcome = error.outcome
    base = HostReport(
        app=desired.app,
        host=host,
        target=str(desired.target),
        result=result,
        version=desired.release.version,
        error=None if error is None else str(error),
        seconds=seconds,
    )
    if outcome is None:
        return base
    before, after = outcome.observed, outcome.after or outcome.observed
    good = before.good[0].config if before.good else None
    return HostReport(
        **{
            **vars(base),
            "serving": serving_release(desired, after),
            "serving_since": serving_since(desired, after),
            "previous": serving_release(desired, before),
            "actions": tuple(outcome.plan.summaries()),
            "applied": outcome.applied,
            "drift": outcome.plan.changed and good is not None and good == outcome.plan.config,
            "rolled_back_to": outcome.rolled_back_to,
            "quarantined": len(after.quarantine),
            "paused": after.paused,
            "hold": after.hold,
            "observed": True,
        }
    )


def events_of(report: HostReport) -> list[str]:
    """The notification events a pass's result makes (watch mode adds backoff and gave_up)."""
    if report.result == CONVERGED and report.applied:
        return ["drift_corrected" if report.drift else "deploy"]
    return {
        ROLLED_BACK: ["rollback"],
        QUARANTINED: ["quarantine"],
        FAILED: ["failure"],
        HELD: ["held"],
    }.get(report.result, [])
