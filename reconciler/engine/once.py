"""One reconcile pass: observe, plan, apply, verify. The imperative shell around the pure core.

observe  one agent request: an immutable snapshot of the host
plan     pure: (desired, snapshot) -> ordered actions with reasons
apply    one agent request: lock, re-check the snapshot, actions, history, re-observe
verify   plan again from the snapshot the apply returned; it must be empty
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from reconciler import __version__
from reconciler.agent.protocol import PROTOCOL
from reconciler.engine import gitinfo
from reconciler.errors import (
    ApplyError,
    HealthCheckFailed,
    Held,
    HostError,
    LockHeld,
    NotConverged,
    Paused,
    PlanStale,
    Quarantined,
    RollbackRefused,
    RolledBack,
    TargetError,
)
from reconciler.executors.base import Event, Executor, Payload
from reconciler.log import log
from reconciler.observe import snapshot
from reconciler.observe.snapshot import Observed
from reconciler.plan import manual
from reconciler.plan.actions import LoadImage, Plan, RecordHold, RecordMaintenance, UploadRelease
from reconciler.plan.planner import plan as make_plan
from reconciler.spec.model import DesiredState

STALE_RETRIES = 2


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    retry_quarantined: bool = False
    adopt: bool = False  # replace files someone else wrote at this app's places (backups kept)
    lock_timeout: float = 0.0
    force: bool = False  # apply even though the host is paused (`reconcile --once --force`)
    # `reconcile rollback [VERSION]`: plan the way back to a recorded good state, and hold it.
    rollback: manual.Request | None = None
    # Test-only fault points, e.g. {"kill_after_action": 3}: honoured only by an agent on a
    # host whose root switched fault injection on (see reconciler/agent/apply.py).
    fault: dict[str, float] = field(default_factory=dict)


@dataclass
class Outcome:
    plan: Plan
    observed: Observed
    applied: bool = False
    after: Observed | None = None
    timings: dict[str, float] = field(default_factory=dict)
    rolled_back_to: str | None = None


class Reporter(Protocol):
    def planned(self, desired: DesiredState, plan: Plan, observed: Observed, ms: float) -> None: ...
    def event(self, plan: Plan, event: Event) -> None: ...


class SilentReporter:
    def planned(self, desired: DesiredState, plan: Plan, observed: Observed, ms: float) -> None:
        pass

    def event(self, plan: Plan, event: Event) -> None:
        pass


def observe(executor: Executor, desired: DesiredState) -> Observed:
    answer = executor.request(
        {"op": "observe", "protocol": PROTOCOL, "observe": snapshot.request_for(desired)}
    )
    if answer.get("event") != "result":
        raise HostError(
            f"observing the host failed: {answer.get('error')}", hint=answer.get("detail") or None
        )
    raw = answer["snapshot"]
    host = raw.get("host") or {}
    uid = host.get("uid")
    if isinstance(uid, int) and uid != 0:  # it would read too little and plan from that
        user = host.get("user") or uid
        local = executor.description == "local"
        raise TargetError(
            f"{'running' if local else 'connected'} as {user} (uid {uid}) without root",
            hint="run reconcile as root" if local else f"connect as root or give {user} passwordless sudo",
        )
    return snapshot.parse(raw)


def reconcile_once(
    desired: DesiredState,
    executor: Executor,
    options: RunOptions | None = None,
    reporter: Reporter | None = None,
) -> Outcome:
    """Observe, plan, and (unless a dry run or nothing to do) apply and verify."""
    options = options or RunOptions()
    reporter = reporter or SilentReporter()
    outcome = plan_host(desired, executor, options, reporter)
    return converge(desired, executor, options, reporter, outcome)


def plan_host(desired: DesiredState, executor: Executor, options: RunOptions, reporter: Reporter) -> Outcome:
    """Observe the host (waiting for another run's lock unless a dry run) and plan.

    Raises HostError (the host needs attention) or Paused (someone paused it) when the plan
    must not be applied; either carries the Outcome."""
    t0 = time.perf_counter()
    observed = observe(executor, desired)
    if observed.lock_holder is not None and not options.dry_run:
        # Another run is applying: what we see may still change (it may roll back), so
        # wait for its lock like an apply would, and plan from what it leaves behind.
        observed = _after_lock(desired, executor, options, reporter)
    observe_ms = (time.perf_counter() - t0) * 1000
    the_plan = make_plan(desired, observed, retry_quarantined=options.retry_quarantined, adopt=options.adopt)
    refused = None
    if options.rollback is not None and not the_plan.blockers:
        choice = manual.choose(desired, observed, options.rollback.version)
        if choice.target is not None:
            the_plan = manual.plan_rollback(desired, observed, choice.target, options.rollback)
        else:
            the_plan = Plan((), observed.fingerprint, config=the_plan.config)
            refused = RollbackRefused(
                f"{choice.error}\nNothing was changed.",
                hint="`reconcile releases` lists the releases on the host and what a rollback can go to",
            )
    reporter.planned(desired, the_plan, observed, observe_ms)
    log.info(
        "planned", host=executor.description, actions=len(the_plan.actions), observe_ms=round(observe_ms, 1)
    )
    outcome = Outcome(the_plan, observed, timings={"observe_ms": observe_ms})
    if refused is not None:
        refused.outcome = outcome
        raise refused
    if the_plan.blockers:
        error = HostError("the host needs attention first:\n  " + "\n  ".join(the_plan.blockers))
        error.outcome = outcome
        raise error
    if observed.paused is not None and not options.dry_run and not options.force:
        paused = Paused(
            f"nothing was done: the host is {observed.paused.describe()}",
            hint="`reconcile resume` lets runs converge it again; `reconcile --once --force` applies "
            "once anyway",
        )
        paused.outcome = outcome
        raise paused
    return outcome


def converge(
    desired: DesiredState, executor: Executor, options: RunOptions, reporter: Reporter, outcome: Outcome
) -> Outcome:
    """Apply a planned outcome (planned again if the host moved). A failure is undone by the
    agent itself, with the rollback the plan carries; this only reports what happened."""
    for attempt in range(STALE_RETRIES + 1):
        if options.dry_run or not outcome.plan.changed:
            try:
                _refuse_if_quarantined(desired, outcome)
                _refuse_if_held(desired, outcome)
            except (Quarantined, Held) as exc:
                exc.outcome = outcome
                raise
            return outcome
        try:
            kind = "rollback" if options.rollback is not None else "deploy"
            outcome.after = _apply(
                desired, executor, options, reporter, outcome.plan, outcome.timings, kind=kind
            )
            outcome.applied = True
            _refuse_if_quarantined(desired, outcome)
            _refuse_if_held(desired, outcome)
            return outcome
        except PlanStale:
            if attempt == STALE_RETRIES:
                raise
            log.warning("host changed between observing and applying; planning again")
            outcome = plan_host(desired, executor, options, reporter)
        except (RolledBack, ApplyError) as exc:
            outcome.applied = True
            if isinstance(exc.after, Observed):
                outcome.after = exc.after
            if isinstance(exc, RolledBack):
                outcome.rolled_back_to = exc.rolled_back_to
            exc.outcome = outcome
            raise
        except (Quarantined, Held) as exc:
            exc.outcome = outcome
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _refuse_if_quarantined(desired: DesiredState, outcome: Outcome) -> None:
    """A quarantined configuration is not tried again (its plan only ever restores the last
    good state, if an interruption had left the host elsewhere)."""
    if outcome.plan.quarantined is None:
        return
    where = " (the host was brought back to its last good state)" if outcome.applied else ""
    raise Quarantined(
        f"release {desired.release.version} with this configuration ({outcome.plan.config}) is "
        f"quarantined: {outcome.plan.quarantined}{where}",
        hint="fix it and deploy (a changed file is a new configuration), "
        "or retry this one on purpose with --retry-quarantined",
    )


def _refuse_if_held(desired: DesiredState, outcome: Outcome) -> None:
    """A host held by `reconcile rollback` stays where it is (its plan only ever puts the held
    state back, if something moved it): a distinct result, so CI and watch mode say so."""
    if outcome.plan.held is None:
        return
    where = " (drift of the held state was corrected)" if outcome.applied else ""
    raise Held(
        f"nothing was deployed: the host is {outcome.plan.held}{where}; runs leave it there while "
        f"the desired file names {desired.release.version} with this configuration ({outcome.plan.config})",
        hint="`reconcile resume` ends the hold (the next run deploys the file); so does a commit that "
        "changes the desired state. `git revert` of the commit that introduced the release makes the "
        "rollback permanent",
    )


def _after_lock(
    desired: DesiredState, executor: Executor, options: RunOptions, reporter: Reporter
) -> Observed:
    request = {
        "op": "apply",
        "protocol": PROTOCOL,
        "observe": snapshot.request_for(desired),
        "actions": [],
        "lock_timeout": options.lock_timeout,
        "holder": {"user": f"{getpass.getuser()}@{socket.gethostname()}", "client_pid": os.getpid()},
        "record": False,
    }
    empty = Plan((), "")
    answer = executor.request(request, on_event=lambda e: _on_event(reporter, empty, e))
    if answer.get("event") == "error":
        raise _agent_error(answer, options)
    raw = answer["after"]
    return snapshot.parse(raw)


def apply_plan(
    desired: DesiredState,
    executor: Executor,
    options: RunOptions,
    reporter: Reporter,
    the_plan: Plan,
    *,
    kind: str = "deploy",
    verify: bool = True,
) -> Observed:
    """Apply a plan in one agent request; return the host as observed right after."""
    return _apply(desired, executor, options, reporter, the_plan, {}, kind=kind, verify=verify)


def _apply(
    desired: DesiredState,
    executor: Executor,
    options: RunOptions,
    reporter: Reporter,
    the_plan: Plan,
    timings: dict[str, float],
    *,
    kind: str = "deploy",
    verify: bool = True,
) -> Observed:
    payload: Payload | None = None
    wires: list[dict[str, Any]] = []
    for action in the_plan.actions:
        wire = action.wire()
        if isinstance(action, UploadRelease) or (isinstance(action, LoadImage) and action.source):
            from reconciler.engine import artifact  # tar and temp-file machinery: uploads only

            payload = artifact.prepare(desired)
            wire["size"] = payload.size
        wires.append(wire)
    revision = gitinfo.revision_of(desired.file)
    who = f"{getpass.getuser()}@{socket.gethostname()}"
    request: dict[str, Any] = {
        "op": "apply",
        "protocol": PROTOCOL,
        "observe": snapshot.request_for(desired),
        "expect": the_plan.fingerprint,
        "actions": wires,
        "rollback": the_plan.rollback.wire() if the_plan.rollback else None,
        "lock_timeout": options.lock_timeout,
        "holder": {"user": who, "client_pid": os.getpid(), "version": desired.release.version},
        "journal": {
            "kind": kind,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "user": who,
            "tool": __version__,
            "file": str(desired.file),
            "commit": revision.commit,
            "dirty": revision.dirty,
            "version": desired.release.version,
            "strategy": desired.strategy,
            "actions": the_plan.summaries(),
            "adopted": list(the_plan.adopting),
        },
        "fault": options.fault or None,
        "force": options.force or None,
    }
    if options.rollback is not None:
        # The history names the release the host was rolled back to, and why.
        to = next((a.hold["version"] for a in the_plan.actions if isinstance(a, RecordHold) and a.hold), None)
        request["journal"].update(reason=options.rollback.reason, version=to or desired.release.version)
    t0 = time.perf_counter()
    answer = executor.request(request, payload=payload, on_event=lambda e: _on_event(reporter, the_plan, e))
    timings["apply_ms"] = (time.perf_counter() - t0) * 1000
    if answer.get("event") == "error":
        raise _agent_error(answer, options)
    after_raw = answer["after"]
    after = snapshot.parse(after_raw)
    failure = answer.get("failure")
    if failure:
        raise _failure_error(desired, the_plan, failure, answer.get("rolled_back"), after)
    # A plan that only brings the host back to its last good state (the desired configuration
    # is quarantined) is verified as such; any other plan against the configuration it applied
    # (an idle colour stopped on the way may have quarantined something meanwhile).
    check = make_plan(desired, after, retry_quarantined=the_plan.quarantined is None, adopt=options.adopt)
    if verify and check.changed:
        raise NotConverged(
            "the host still differs after applying:\n  "
            + "\n  ".join(f"{a.summary()['action']} {a.target}: {a.reason}" for a in check.actions)
        )
    return after


def _on_event(reporter: Reporter, the_plan: Plan, event: Event) -> None:
    kind = event.get("event")
    steps = the_plan.steps(event.get("phase"))
    if kind == "action_done" and 0 <= event["index"] < len(steps):
        action = steps[event["index"]]
        log.info("action.done", **action.summary(), ms=event.get("ms"), phase=event.get("phase"))
    elif kind == "action_failed":
        log.error("action.failed", index=event.get("index"), error=event.get("error"))
    reporter.event(the_plan, event)


def _agent_error(answer: Event, options: RunOptions) -> Exception:
    code = answer.get("code")
    if code == "locked":
        import json

        try:
            holder = json.loads(answer.get("detail") or "{}")
        except ValueError:
            holder = {}
        return LockHeld(holder, options.lock_timeout)
    if code == "stale":
        return PlanStale("the host changed after it was observed; nothing was applied")
    if code == "paused":
        return Paused(f"nothing was done: {answer.get('error')}", hint="`reconcile resume` first")
    if code == "missing":
        return TargetError(answer.get("error", "a required program is missing on the host"))
    return HostError(f"the host agent failed: {answer.get('error')}", hint=answer.get("detail") or None)


def _failure_error(
    desired: DesiredState,
    the_plan: Plan,
    failure: dict[str, Any],
    rolled_back: dict[str, Any] | None,
    after: Observed,
) -> ApplyError | RolledBack:
    """What the agent reports, as the error the CLI exits with: RolledBack (exit 3) when the
    host serves its last good state again, ApplyError (exit 1) otherwise."""
    index = int(failure["index"])
    action = the_plan.actions[index] if 0 <= index < len(the_plan.actions) else None
    what = f"{action.summary()['action']} {action.target}" if action else "apply"
    message = f"action {index + 1}/{len(the_plan.actions)} ({what}) failed: {failure['error']}"
    detail = failure.get("detail", "")
    last = next((ln for ln in detail.splitlines() if ln.startswith("last answer")), "")
    if last:
        message += f" ({last})"
    version = desired.release.version
    quarantined = failure.get("on_failure") == "quarantine"
    if failure.get("code") == "task" and (not rolled_back or rolled_back.get("ok")):
        # A release task (a migration) failed before anything was switched: not a release
        # that failed its gate, so exit 1, with the task's own output.
        return ApplyError(
            message,
            action_index=index,
            detail=detail,
            hint="nothing was switched: the release that served before still serves; fix the task "
            "(its output is above and in the host's journal) and run again",
        )
    if rolled_back and rolled_back.get("ok") and rolled_back.get("to"):
        good = rolled_back["to"]
        note = f" {version} with this configuration is quarantined." if quarantined else ""
        error = RolledBack(
            f"{message}\nrolled back to {good} on the host: its last good state passed its health "
            f"gate and serves again.{note}",
            hint=_naming_hint(desired, failure)
            or "fix the release or the configuration and deploy again"
            + (" (or retry this one with --retry-quarantined)" if quarantined else ""),
        )
        error.rolled_back_to = good
        error.detail = detail
        error.after = after
        return error
    if rolled_back and not rolled_back.get("ok"):
        broken = rolled_back.get("failure") or {}
        hint = "the host needs attention: see `reconcile status` and the unit journals"
        cls = HealthCheckFailed if failure.get("code") in GATE_CODES else ApplyError
        error2 = cls(
            f"{message}\nrolling back to {rolled_back.get('to')} failed too: {broken.get('error')}",
            action_index=index,
            detail=detail,
            hint=hint,
        )
        error2.after = after
        return error2
    if quarantined:
        hint = (
            f"nothing was rolled back: no earlier release passed its gates on this host, and {version} "
            "with this configuration is quarantined. "
            + (
                _naming_hint(desired, failure)
                or "Fix it and deploy again (a changed file is a new configuration), or retry with "
                "--retry-quarantined"
            )
        )
    elif index:
        hint = f"actions 1-{index} were applied and stay applied; fix the cause and run again to converge"
    else:
        hint = "nothing was changed; fix the cause and run again"
    cls = HealthCheckFailed if failure.get("code") in GATE_CODES else ApplyError
    error3 = cls(message, action_index=index, detail=detail, hint=hint)
    error3.after = after
    return error3


# A gate that failed: the release never became healthy, or never named its version.
GATE_CODES = ("health", "version")


def _naming_hint(desired: DesiredState, failure: dict[str, Any]) -> str:
    """For a release that answered its health path but never named its version: how to say
    where it does, or that it does not ("" for any other failure)."""
    if failure.get("code") != "version":
        return ""
    at = desired.health.version_at
    if at is None:
        where = (
            "If the app names its version elsewhere in that answer (see the last answer above), "
            "say where with health.version_at: {json: path.to.version} or {header: X-App-Version}"
        )
    else:
        where = (
            f"Check that health.version_at ({at[0]}: {at[1]}) is where the app names its version "
            "(see the last answer above)"
        )
    return (
        f"{where}; if its answer does not name the version at all, set health.expect_version: "
        "false. Either change is a new configuration: run again, no --retry-quarantined needed"
    )


def set_maintenance(
    desired: DesiredState, executor: Executor, options: RunOptions, reporter: Reporter, on: bool, why: str
) -> Outcome:
    """`reconcile maintenance on|off`: record it on the host and flip the switch Caddy looks
    at on every request, in one apply, whatever state the host is in (a quarantined release, a
    pause: maintenance changes what the site answers, never what runs). A host whose Caddy
    runs a fragment written before the switch existed is converged once, which writes it."""
    from dataclasses import replace

    from reconciler.plan import proxy, routing

    who = f"{getpass.getuser()}@{socket.gethostname()}"
    observed = observe(executor, desired)
    record = RecordMaintenance(f"asked by {who}", on=on, why=why, by=who)
    the_plan = Plan((record, *proxy.maintenance_actions(desired, observed, by_hand=on)), "")
    forced = replace(options, force=True)
    after = apply_plan(desired, executor, forced, reporter, the_plan, kind="maintenance", verify=False)
    outcome = Outcome(the_plan, observed, applied=True, after=after)
    if routing.caddy_runs(after) and desired.app not in after.caddy.marks:
        return reconcile_once(desired, executor, options, reporter)
    return outcome
