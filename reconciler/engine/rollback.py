"""What happens when the desired release fails its health gate: undo, quarantine, report.

The rollback is not a special procedure: it is the ordinary planner run against the host as
it was left, with the desired version replaced by the last release that served, and the
failed version marked quarantined so no colour keeps running it. It is applied like any plan
and verified like any plan. A later run with the same desired version is refused until the
version changes or the user retries on purpose.
"""

from __future__ import annotations

import posixpath
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING

from reconciler.errors import ApplyError, HealthCheckFailed, ReconcilerError, RolledBack
from reconciler.log import log
from reconciler.observe.snapshot import Observed
from reconciler.plan.actions import CheckHealth, Plan, RecordQuarantine
from reconciler.plan.planner import link_points_to, serving_release
from reconciler.plan.planner import plan as make_plan
from reconciler.spec.model import DesiredState

if TYPE_CHECKING:
    from reconciler.engine.once import Outcome, Reporter, RunOptions
    from reconciler.executors.base import Executor


def last_good_release(desired: DesiredState, before: Observed) -> str | None:
    """The release that served traffic before this run, if any (never the desired one)."""
    version = serving_release(desired, before)
    if version is None and desired.strategy != "blue-green":
        target = link_points_to(before, desired.layout.current)
        version = posixpath.basename(target) if target else None
    if version is None or version == desired.release.version or version not in before.releases:
        return None
    return version


def _why(failure: HealthCheckFailed) -> str:
    first = failure.message.splitlines()[0]
    last = next((ln for ln in failure.detail.splitlines() if ln.startswith("last answer")), "")
    return f"{first} {last}".strip()


def after_failed_gate(
    desired: DesiredState,
    executor: Executor,
    options: RunOptions,
    reporter: Reporter,
    outcome: Outcome,
    failure: HealthCheckFailed,
) -> Outcome:
    from reconciler.engine.once import apply_plan

    index = failure.action_index if failure.action_index is not None else -1
    gate = outcome.plan.actions[index] if 0 <= index < len(outcome.plan.actions) else None
    version = desired.release.version
    if not isinstance(gate, CheckHealth) or gate.gates != version or not isinstance(failure.after, Observed):
        raise failure
    after: Observed = failure.after
    why = _why(failure)
    record = RecordQuarantine(f"{version} failed its health gate", version=version, why=why)
    good = last_good_release(desired, outcome.observed)
    if good is None:
        only_record = Plan((record,), after.fingerprint)
        apply_plan(desired, executor, options, reporter, only_record, kind="quarantine", verify=False)
        failure.hint = (
            f"there was no earlier release to roll back to; {version} is now quarantined: "
            "fix it and deploy a new version, or retry with --retry-quarantined"
        )
        raise failure
    target = replace(desired, release=replace(desired.release, version=good, sha256=None))
    marked = replace(after, quarantine=MappingProxyType({**after.quarantine, version: why}))
    back = make_plan(target, marked)
    back = Plan((*back.actions, record), after.fingerprint)
    log.warning("rolling back", failed=version, to=good, actions=len(back.actions))
    reporter.planned(target, back, after, 0.0)
    try:
        outcome.after = apply_plan(target, executor, options, reporter, back, kind="rollback")
    except ReconcilerError as exc:
        raise ApplyError(
            f"{failure.message.splitlines()[0]}; rolling back to {good} failed too: {exc}",
            hint="the host needs attention: see `reconcile status` and the unit journals",
        ) from exc
    outcome.rolled_back_to = good
    error = RolledBack(
        f"release {version} failed its health gate ({why}); rolled back to {good}, which passed its "
        f"health gate and serves again. {version} is quarantined.",
        hint="fix the release and deploy a new version, or retry this one with --retry-quarantined",
    )
    error.outcome = outcome
    raise error
