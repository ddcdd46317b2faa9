"""The commands behind `reconcile --once` and `reconcile --watch` (the subcommands that only
read or record are in hostcmds.py)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import log as logmod
from reconciler.cli.output import HumanReporter, json_result, serving_fields
from reconciler.engine import gitinfo
from reconciler.engine.once import Outcome, Reporter, RunOptions, SilentReporter, reconcile_once
from reconciler.errors import (
    Held,
    InputProblem,
    InvalidDesiredState,
    Paused,
    Quarantined,
    ReconcilerError,
    RolledBack,
)
from reconciler.executors.base import Executor
from reconciler.executors.connect import executor_for
from reconciler.executors.ssh_options import SSHOptions
from reconciler.spec.load import Checks, load
from reconciler.spec.model import DesiredState

if TYPE_CHECKING:
    from reconciler.engine.notify import Notifier
    from reconciler.engine.report import HostReport


def setup_logging(args: argparse.Namespace, *, service: bool = False) -> None:
    """--once prints its own account of the run on stdout, so stderr logs only warnings unless
    -v asks for every step; watch mode has no other voice, so it logs at info. The format is a
    console renderer on a terminal and JSON lines otherwise (journald, CI logs)."""
    level = "debug" if args.verbose >= 2 else "info" if args.verbose or service else "warning"
    fmt = None if args.log_format is None else args.log_format == "json"
    logmod.configure(level, fmt)


def ssh_options(args: argparse.Namespace) -> SSHOptions:
    return SSHOptions(
        identity=tuple(args.identity),
        known_hosts=args.known_hosts,
        accept_new_host_key=args.accept_new_host_key,
        transport=args.ssh,
    )


def fail(
    args: argparse.Namespace,
    exc: ReconcilerError,
    desired: DesiredState | None = None,
    outcome: Outcome | None = None,
) -> int:
    if outcome is None and isinstance(exc.outcome, Outcome):
        outcome = exc.outcome
    if isinstance(exc, InvalidDesiredState) and not args.json:
        for warning in exc.warnings:
            print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        extra: dict[str, Any] = serving_fields(desired, outcome) if desired and outcome else {}
        if outcome and outcome.rolled_back_to:
            extra["rolled_back_to"] = outcome.rolled_back_to
        if isinstance(exc, InvalidDesiredState):
            extra["problems"] = [p.as_json() for p in [*exc.problems, *exc.warnings]]
        print(
            json_result(
                desired=desired,
                plan=outcome.plan if outcome else None,
                result=_result_name(exc),
                error=str(exc),
                applied=bool(outcome and outcome.applied),
                extra=extra or None,
            )
        )
    elif getattr(args, "markdown", False):
        from reconciler.cli.markdown import error_markdown, once_markdown

        result = _result_name(exc)
        if desired is None:
            print(error_markdown(str(args.file), result, str(exc)))
        else:
            print(once_markdown(desired, outcome, result, dry_run=args.dry_run, error=str(exc)))
        print(f"error: {exc}", file=sys.stderr)
    else:
        print(f"error: {exc}", file=sys.stderr)
    return exc.exit_code


def _result_name(exc: ReconcilerError) -> str:
    if isinstance(exc, RolledBack):
        return "rolled_back"
    if isinstance(exc, Quarantined):
        return "quarantined"
    if isinstance(exc, InvalidDesiredState):
        return "invalid"
    if isinstance(exc, Paused):
        return "paused"
    if isinstance(exc, Held):
        return "held"
    return "failed"


def validated_cache() -> Path:
    """Where the CLI remembers desired-state bytes that passed the schema (see spec.load)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reconciler" / "valid"


def load_desired(args: argparse.Namespace) -> DesiredState:
    checks = Checks(require_checksum=getattr(args, "require_checksum", False), limit=tuple(args.limit))
    desired = load(args.file, target_override=args.target, cache_dir=validated_cache(), checks=checks)
    if getattr(args, "require_committed", False) and gitinfo.revision_of(desired.file).dirty:
        why = "has uncommitted changes, refused by --require-committed"
        raise InvalidDesiredState([InputProblem(str(args.file), None, None, "", why, "commit it first")])
    return desired


def print_warnings(desired: DesiredState) -> None:
    """Settings that do nothing, said once per command (watch mode: once per revision)."""
    for warning in desired.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def once(args: argparse.Namespace) -> int:
    setup_logging(args)
    try:
        desired = load_desired(args)
    except InvalidDesiredState as exc:
        return fail(args, exc)
    print_warnings(desired)
    options = RunOptions(
        dry_run=args.dry_run,
        retry_quarantined=args.retry_quarantined,
        adopt=getattr(args, "adopt", False),
        lock_timeout=args.lock_timeout,
        force=args.force,
        fault=fault_points(),
    )
    if desired.is_fleet or args.limit:
        return fleet_once(args, desired, options)
    executor = executor_for(desired.target, ssh_options(args))
    reporter: Reporter = SilentReporter() if args.json or args.markdown else HumanReporter()
    notifier = _notifier(desired, options)
    t0 = time.monotonic()
    try:
        try:
            outcome = reconcile_once(desired, executor, options, reporter)
        except ReconcilerError as exc:
            _tell(notifier, desired, [_report(desired, None, exc, t0)], {desired.hosts[0].name: executor})
            return fail(args, exc, desired)
        _tell(notifier, desired, [_report(desired, outcome, None, t0)], {desired.hosts[0].name: executor})
        return finish(args, desired, outcome)
    finally:
        executor.close()


def _notifier(desired: DesiredState, options: RunOptions) -> Notifier | None:
    if not desired.notify or options.dry_run:
        return None
    from reconciler.engine.notify import Notifier

    return Notifier(desired.notify)


def _report(
    desired: DesiredState, outcome: Outcome | None, exc: ReconcilerError | None, t0: float
) -> HostReport:
    from reconciler.engine.report import CONVERGED, NOOP, host_report, result_of

    if exc is not None:
        return host_report(desired, desired.hosts[0].name, result_of(exc), None, exc, time.monotonic() - t0)
    assert outcome is not None
    result = CONVERGED if outcome.applied else NOOP
    return host_report(desired, desired.hosts[0].name, result, outcome, None, time.monotonic() - t0)


def _tell(
    notifier: Notifier | None,
    desired: DesiredState,
    reports: list[HostReport],
    executors: dict[str, Executor],
) -> None:
    """Queue the notices, give them up to one webhook timeout to go out, and note each
    delivery in its host's history before the connections close."""
    if notifier is None:
        return
    from reconciler.engine.announce import announce, note_deliveries

    if not announce(notifier, reports, file=desired.file, mode="once"):
        return
    notifier.wait(max(h.timeout for h in desired.notify))
    for report in reports:
        one = desired.for_host(next(h for h in desired.hosts if h.name == report.host))
        if report.observed:  # a host never reached would only time out again
            note_deliveries(notifier, report.host, one, executors.get(report.host))


def fleet_once(args: argparse.Namespace, desired: DesiredState, options: RunOptions) -> int:
    from reconciler.cli.output import FleetHumanReporter, fleet_json, fleet_summary
    from reconciler.engine import fleet as fleet_mod

    executors = fleet_mod.Executors(lambda d: executor_for(d.target, ssh_options(args)), desired)
    quiet = args.json or args.markdown
    reporter: fleet_mod.FleetReporter = fleet_mod.SilentFleetReporter() if quiet else FleetHumanReporter()
    notifier = _notifier(desired, options)
    t0 = time.monotonic()
    try:
        run = fleet_mod.reconcile_fleet(desired, executors, options, reporter, args.limit)
        seconds = time.monotonic() - t0
        _tell(notifier, desired, [r.report(seconds) for r in run.runs], dict(executors.cache))
    except InvalidDesiredState as exc:
        return fail(args, exc, desired)
    finally:
        executors.close()
    code = run.exit_code
    if code == 2 and not args.dry_run:  # cannot happen outside a dry run; keep the contract
        code = 0
    names = {
        0: "converged" if any(r.result == "converged" for r in run.runs) else "noop",
        1: "failed",
        2: "changes_pending",
        3: "stopped" if run.stopped else "rolled_back",
        4: "paused",
    }
    if args.json:
        print(fleet_json(desired, run, names[code]))
    elif args.markdown:
        from reconciler.cli.markdown import fleet_markdown

        print(fleet_markdown(desired, run, names[code], dry_run=args.dry_run))
    else:
        print(fleet_summary(run))
    return code


def finish(args: argparse.Namespace, desired: DesiredState, outcome: Outcome) -> int:
    plan = outcome.plan
    if args.dry_run:
        result, code = ("changes_pending", 2) if plan.changed else ("noop", 0)
    else:
        result, code = ("converged", 0) if plan.changed else ("noop", 0)
    if args.json:
        print(
            json_result(
                desired=desired,
                plan=plan,
                result=result,
                host=outcome.observed.hostname,
                applied=outcome.applied,
                timings=outcome.timings,
                extra=serving_fields(desired, outcome)
                | (
                    {"lock_holder": dict(outcome.observed.lock_holder)}
                    if outcome.observed.lock_holder
                    else {}
                ),
            )
        )
        return code
    if args.markdown:
        from reconciler.cli.markdown import once_markdown

        print(once_markdown(desired, outcome, result, dry_run=args.dry_run))
        return code
    if not plan.changed:
        print("No changes: the host matches the desired state.")
    elif args.dry_run:
        print(f"Dry run: {len(plan.actions)} actions would run. Apply with: reconcile --once")
    else:
        seconds = outcome.timings.get("apply_ms", 0) / 1000
        print(
            f"Converged: {len(plan.actions)} actions applied in {seconds:.1f} s; verified by observing again."
        )
    return code


def fault_points() -> dict[str, float]:
    """Test-only fault injection, sent along with an apply: RECONCILER_FAULT_AFTER_ACTION=N
    kills the agent after action N, RECONCILER_FAULT_DURING_ACTION=N[:SECONDS] that long into
    action N, RECONCILER_FAULT_PAUSE_BEFORE=N[:SECONDS] makes it wait before action N (so a test
    can change the host between two steps). An agent honours them only on a host whose root
    switched fault injection on (reconciler/agent/apply.py FAULT_SWITCH): never on a production
    host by accident."""
    out: dict[str, float] = {}
    with contextlib.suppress(ValueError):
        if pause := os.environ.get("RECONCILER_FAULT_PAUSE_BEFORE"):
            index, _, seconds = pause.partition(":")
            out["pause_before_action"] = int(index)
            out["pause"] = float(seconds or 3)
        if after := os.environ.get("RECONCILER_FAULT_AFTER_ACTION"):
            out["kill_after_action"] = int(after)
        if during := os.environ.get("RECONCILER_FAULT_DURING_ACTION"):
            index, _, delay = during.partition(":")
            out["kill_during_action"] = int(index)
            out["delay"] = float(delay or 0.5)
    return out


def watch(args: argparse.Namespace) -> int:
    from reconciler.engine.watch import run as run_watch

    setup_logging(args, service=True)
    if args.force:
        # Watch mode respects a pause for as long as it lasts; overriding one is a single act.
        print("error: --force only goes with --once (watch mode never overrides a pause)", file=sys.stderr)
        return 1
    if not Path(args.file).exists():
        # Later a broken or vanished file is waited out; at start it is a mistake to report.
        print(f"error: {args.file}: no such file; pass the desired state with -f FILE", file=sys.stderr)
        return 1
    # Passes over a held connection talk to one resident agent: a round trip, not a new python3.
    options = replace(ssh_options(args), resident=True)
    return run_watch(args, load_desired, lambda d: executor_for(d.target, options))
