"""`reconcile rollback [VERSION]` and `reconcile releases`: going back to a state the host
recorded as good, and what is on the host to go back to."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from reconciler.cli.commands import _notifier, _tell, fail, ssh_options
from reconciler.cli.output import HumanReporter, json_result, serving_fields
from reconciler.engine import gitinfo
from reconciler.engine.hostrecords import who
from reconciler.engine.once import Outcome, Reporter, RunOptions, SilentReporter, observe, reconcile_once
from reconciler.engine.report import HELD, host_report, result_of
from reconciler.errors import InvalidDesiredState, ReconcilerError
from reconciler.executors.connect import executor_for
from reconciler.plan import manual
from reconciler.spec.model import DesiredState


def add_rollback_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "version",
        nargs="?",
        metavar="VERSION",
        help="the release to go back to (default: the previous good state recorded on the host)",
    )
    parser.add_argument("--reason", default="", metavar="TEXT", help="why, recorded with the hold")
    parser.add_argument(
        "--dry-run", action="store_true", help="show the plan; change nothing (exit 2 if any)"
    )
    parser.add_argument(
        "--force", action="store_true", help="roll back even though the host is paused (`reconcile pause`)"
    )


def revert_hint(desired: DesiredState, to: str) -> str:
    """How to make the rollback permanent: the `git revert` of the commit that introduced the
    release the file names, when git can tell; else what to change."""
    version = desired.release.version
    if version != to:
        found = gitinfo.introduced(desired.file, version)
        if found is not None:
            return f"git revert --no-edit {found.commit[:12]}   # {found.subject}"
        return (
            f"set release.version back to {to} in {desired.file.name} (or `git revert` the commit that "
            f"bumped it to {version}) and commit"
        )
    return (
        f"`git revert` the commit that changed {desired.file.name}'s configuration since "
        f"(`git log -p -- {desired.file.name}`) and commit"
    )


def rollback(args: argparse.Namespace, desired: DesiredState) -> int:
    from reconciler.engine.fleet import select

    try:
        hosts = select(desired, args.limit)
    except InvalidDesiredState as exc:
        return fail(args, exc, desired)
    revision = gitinfo.revision_of(desired.file)
    request = manual.Request(args.version, by=who(), reason=args.reason, commit=revision.commit)
    options = RunOptions(
        dry_run=args.dry_run, lock_timeout=args.lock_timeout, force=args.force, rollback=request
    )
    if desired.is_fleet or args.limit:
        return _fleet(args, desired, options, [h.name for h in hosts])
    return _single(args, desired, options)


def _single(args: argparse.Namespace, desired: DesiredState, options: RunOptions) -> int:
    executor = executor_for(desired.target, ssh_options(args))
    reporter: Reporter = SilentReporter() if args.json else HumanReporter()
    notifier = _notifier(desired, options)
    name = desired.hosts[0].name
    t0 = time.monotonic()
    try:
        try:
            outcome = reconcile_once(desired, executor, options, reporter)
        except ReconcilerError as exc:
            report = host_report(desired, name, result_of(exc), None, exc, time.monotonic() - t0)
            _tell(notifier, desired, [report], {name: executor})
            return fail(args, exc, desired)
        if not args.dry_run:
            report = host_report(desired, name, HELD, outcome, None, time.monotonic() - t0)
            _tell(notifier, desired, [report], {name: executor})
        return _finish(args, desired, outcome)
    finally:
        executor.close()


def _finish(args: argparse.Namespace, desired: DesiredState, outcome: Outcome) -> int:
    before = outcome.observed
    after = outcome.after or before
    choice = manual.choose(desired, before, options_version(args))
    to = choice.target.version if choice.target is not None else "?"
    from reconciler.plan.planner import serving_release

    origin = serving_release(desired, before)
    revert = revert_hint(desired, to)
    if args.dry_run:
        result, code = ("changes_pending", 2) if outcome.plan.changed else ("noop", 0)
    else:
        result, code = "held", 0
    if args.json:
        extra: dict[str, Any] = serving_fields(desired, outcome)
        extra |= {"rollback": {"from": origin, "to": to}, "revert": revert}
        hold = after.hold
        extra["hold"] = None if hold is None else vars(hold) | {"passed": list(hold.passed)}
        print(
            json_result(
                desired=desired,
                plan=outcome.plan,
                result=result,
                host=before.hostname,
                applied=outcome.applied,
                timings=outcome.timings,
                extra=extra,
            )
        )
        return code
    where = before.hostname
    if args.dry_run:
        if outcome.plan.changed:
            print(f"Dry run: {len(outcome.plan.actions)} actions would roll {where} back to {to}.")
        else:
            print(f"No changes: {where} serves {to} and is held there.")
        return code
    if outcome.plan.changed:
        seconds = outcome.timings.get("apply_ms", 0) / 1000
        came = f" from {origin}" if origin and origin != to else ""
        print(f"Rolled back {where} to {to}{came} in {seconds:.1f} s; verified by observing again.")
    else:
        print(f"No changes: {where} serves {to} and is held there.")
    print(
        f"Held at {to}: runs (watch mode, --once, CI) leave it there while {desired.file.name} names "
        f"{desired.release.version} as it does now; `reconcile resume` ends the hold."
    )
    print(f"Make it permanent: {revert}")
    return code


def options_version(args: argparse.Namespace) -> str | None:
    version = getattr(args, "resolved_version", None) or args.version
    return str(version) if version else None


def _fleet(args: argparse.Namespace, desired: DesiredState, options: RunOptions, names: list[str]) -> int:
    from reconciler.cli.output import FleetHumanReporter, fleet_json, fleet_summary
    from reconciler.engine import fleet as fleet_mod

    executors = fleet_mod.Executors(lambda d: executor_for(d.target, ssh_options(args)), desired)
    quiet = args.json
    reporter: fleet_mod.FleetReporter = fleet_mod.SilentFleetReporter() if quiet else FleetHumanReporter()
    notifier = _notifier(desired, options)
    t0 = time.monotonic()
    try:
        if args.version is None:
            version, problem = _one_previous(desired, executors, names)
            if problem is not None:
                print(f"error: {problem}", file=sys.stderr)
                if args.json:
                    print(json.dumps({"result": "failed", "error": problem}, indent=2))
                return 1
            assert version is not None
            args.resolved_version = version
            assert options.rollback is not None
            options = replace(options, rollback=replace(options.rollback, version=version))
        run = fleet_mod.reconcile_fleet(desired, executors, options, reporter, names, all_or_nothing=True)
        seconds = time.monotonic() - t0
        if not args.dry_run:
            reports = [r.report(seconds) for r in run.runs]
            reports = [replace(r, result=HELD) if r.result in ("converged", "noop") else r for r in reports]
            _tell(notifier, desired, reports, dict(executors.cache))
    finally:
        executors.close()
    code = run.exit_code
    if code == 2 and not args.dry_run:
        code = 0
    version = options_version(args)
    if args.json:
        names_by_code = {0: "held", 1: "failed", 2: "changes_pending", 3: "rolled_back", 4: "paused"}
        print(fleet_json(desired, run, "noop" if args.dry_run and code == 0 else names_by_code[code]))
        return code
    print(fleet_summary(run))
    if code == 0 and not args.dry_run:
        revert = revert_hint(desired, str(version))
        print(f"Held at {version}: `reconcile resume` ends the hold; make it permanent: {revert}")
    return code


def _one_previous(
    desired: DesiredState, executors: Callable[[Any], Any], names: list[str]
) -> tuple[str | None, str | None]:
    """Without VERSION a fleet goes back to one release: each host's previous good state must
    be the same one (else the person names it)."""
    hosts = [h for h in desired.hosts if h.name in names]

    def pick(host: Any) -> tuple[str, str | None, str | None]:
        one = desired.for_host(host)
        try:
            choice = manual.choose(one, observe(executors(host), one), None)
        except ReconcilerError as exc:
            return host.name, None, str(exc)
        return host.name, choice.target.version if choice.target else None, choice.error

    with ThreadPoolExecutor(max_workers=max(1, min(desired.rollout.concurrency, len(hosts)))) as pool:
        picks = list(pool.map(pick, hosts))
    errors = [f"{name}: {error}" for name, _, error in picks if error]
    if errors:
        return None, "nothing was changed:\n  " + "\n  ".join(errors)
    versions = {v for _, v, _ in picks}
    if len(versions) != 1:
        each = ", ".join(f"{name} {v}" for name, v, _ in picks)
        return None, (
            f"the hosts' previous good states differ ({each}); nothing was changed: name the release, "
            "e.g. `reconcile rollback VERSION`"
        )
    return versions.pop(), None


def releases(args: argparse.Namespace, desired: DesiredState, executor: Any) -> dict[str, Any]:
    """Every release on the host: size, upload time, checksum, what points at it, whether a
    good state of it is recorded or quarantined, and which one `rollback` would pick."""
    from reconciler.engine.hostrecords import release_sizes
    from reconciler.plan.inventory import inventory

    observed = observe(executor, desired)
    table = inventory(desired, observed, release_sizes(executor, desired, observed.runtime))
    out = table.as_json()
    if not args.json:
        print(table.text(observed.hostname))
    return out
