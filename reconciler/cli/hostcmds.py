"""The subcommands that read or record on the host: status, pause, resume, maintenance
(which records, then converges so Caddy answers with the maintenance page), releases and
rollback (reconciler/cli/rollbackcmds.py); validate and init, which touch no host, are
dispatched from here to their own modules."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from reconciler.agent.protocol import PROTOCOL
from reconciler.cli.commands import fail, load_desired, print_warnings, setup_logging, ssh_options
from reconciler.errors import HostError, InvalidDesiredState, ReconcilerError
from reconciler.executors.base import Executor
from reconciler.executors.connect import executor_for
from reconciler.spec.model import DesiredState

# What `reconcile NAME --help` says above the options, and below them.
ABOUT = {
    "rollback": (
        "Go back to the previous good state recorded on the host (or VERSION's), restored whole as an "
        "automatic rollback restores it, and hold the host there: later runs (watch mode, --once, CI) "
        "leave it there, exit 4 (held), until the desired file names another configuration or "
        "`reconcile resume`.",
        """exit codes: 0 rolled back and held (or already there), 1 error (nothing to go back to: nothing
            changed), 2 with --dry-run: changes pending, 3 the target failed its gate and what
            served before serves again, 4 the host is paused""",
    ),
    "releases": (
        "Every release on the host: size on disk, upload time, checksum, what points at it (current, "
        "previous, a colour), its recorded good states, what of it is quarantined, and which one "
        "`reconcile rollback` would pick.",
        "the README shows an example output (section: Rolling back by hand)",
    ),
    "resume": (
        "Let runs converge the host again: ends a pause and a hold left by `reconcile rollback`.",
        None,
    ),
}


def run_subcommand(name: str, argv: list[str], add_common: Callable[[argparse.ArgumentParser], None]) -> int:
    if name == "init":
        from reconciler.cli.init import run_init

        return run_init(argv)
    about, epilog = ABOUT.get(name, (None, None))
    parser = argparse.ArgumentParser(
        prog=f"reconcile {name}",
        description=about,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(parser)
    if name == "validate":
        from reconciler.cli import validate

        validate.add_arguments(parser)
    if name == "status":
        parser.add_argument("-n", "--runs", type=int, default=10, help="how many recent runs to show")
    if name == "pause":
        parser.add_argument(
            "--reason", default="", metavar="TEXT", help="why (shown by status and every run)"
        )
    if name == "maintenance":
        parser.add_argument("state", choices=["on", "off"], help="on: answer 503 (the health path excepted)")
        parser.add_argument("--reason", default="", metavar="TEXT", help="why, recorded on the host")
    if name == "rollback":
        from reconciler.cli.rollbackcmds import add_rollback_arguments

        add_rollback_arguments(parser)
    if name in ("pause", "resume", "maintenance", "rollback"):
        parser.add_argument(
            "--lock-timeout",
            type=float,
            default=120.0,
            metavar="SECONDS",
            help="wait this long for a run in progress to finish (default 120)",
        )
    args = parser.parse_args(argv)
    args.dry_run = getattr(args, "dry_run", False)
    args.markdown = False
    setup_logging(args)
    if name == "validate":
        return validate.validate(args)
    try:
        desired = load_desired(args)
    except InvalidDesiredState as exc:
        return fail(args, exc)
    if not args.json:
        print_warnings(desired)
    if name == "rollback":
        from reconciler.cli.rollbackcmds import rollback

        return rollback(args, desired)
    from reconciler.engine.fleet import select

    try:
        hosts = select(desired, args.limit)
    except InvalidDesiredState as exc:
        return fail(args, exc, desired)
    code = 0
    answers: dict[str, Any] = {}
    for host in hosts:
        one = desired.for_host(host)
        if len(hosts) > 1 and not args.json:
            print(f"== {host.name} ({host.target})")
        executor = executor_for(one.target, ssh_options(args))
        try:
            if name == "status":
                answers[host.name] = status(args, one, executor)
            elif name == "maintenance":
                answers[host.name] = maintenance(args, one, executor)
            elif name == "releases":
                from reconciler.cli.rollbackcmds import releases

                answers[host.name] = releases(args, one, executor)
            else:
                answers[host.name] = pause_or_resume(args, one, executor, pausing=name == "pause")
        except ReconcilerError as exc:
            if args.json:
                answers[host.name] = {"result": "failed", "error": str(exc)}
            else:
                print(f"error: {exc}", file=sys.stderr)
            code = max(code, exc.exit_code)
        finally:
            executor.close()
    if args.json:
        print(json.dumps(answers[hosts[0].name] if len(hosts) == 1 else {"hosts": answers}, indent=2))
    return code


def pause_or_resume(
    args: argparse.Namespace, desired: DesiredState, executor: Executor, *, pausing: bool
) -> dict[str, Any]:
    from reconciler.engine.hostrecords import set_pause

    def waiting(event: dict[str, Any]) -> None:
        if event.get("event") == "lock_wait" and not args.json:
            holder = ", ".join(f"{k}={v}" for k, v in (event.get("holder") or {}).items())
            print(f"  waiting for the run in progress to finish ({holder})", flush=True)

    reason = (args.reason or "") if pausing else None
    before, after, held = set_pause(
        executor, desired, reason, lock_timeout=args.lock_timeout, on_event=waiting
    )
    if not args.json:
        where = executor.description
        if after is not None:
            if before is not None:
                print(f"{where} was already {before.describe()}")
            print(f"{where}: {after.describe()}. Runs report it and change nothing until `reconcile resume`.")
        if before is not None and after is None:
            print(f"{where}: resumed (it was {before.describe()}). The next run converges it.")
        if held is not None:
            print(
                f"{where}: the hold ended (it was {held.describe()}). The next run deploys the desired state."
            )
        if before is None and after is None and held is None:
            print(f"{where}: was neither paused nor held.")
    return {
        "result": "paused" if after else "resumed",
        "paused": None if after is None else vars(after),
        "was_paused": None if before is None else vars(before),
        "was_held": None if held is None else vars(held) | {"passed": list(held.passed)},
    }


def maintenance(args: argparse.Namespace, desired: DesiredState, executor: Executor) -> dict[str, Any]:
    from reconciler.cli.output import HumanReporter
    from reconciler.engine.once import Reporter, RunOptions, SilentReporter, set_maintenance

    reporter: Reporter = SilentReporter() if args.json else HumanReporter()
    options = RunOptions(lock_timeout=args.lock_timeout)
    outcome = set_maintenance(desired, executor, options, reporter, args.state == "on", args.reason)
    if not args.json:
        print(f"maintenance {args.state} on {executor.description}")
    return {
        "result": f"maintenance {args.state}",
        "actions": outcome.plan.summaries(),
        "applied": outcome.applied,
    }


def status(args: argparse.Namespace, desired: DesiredState, executor: Executor) -> dict[str, Any]:
    """What the host serves and since when, whether it is paused, its recent runs and notes,
    and what is quarantined: one observation and one history request."""
    from reconciler.engine.once import observe
    from reconciler.plan.planner import serving_release, serving_since
    from reconciler.plan.routing import serving_unit

    observed = observe(executor, desired)
    answer = executor.request(
        {"op": "history", "protocol": PROTOCOL, "state": desired.layout.state, "limit": args.runs}
    )
    if answer.get("event") == "error":
        raise HostError(
            f"reading the host's history failed: {answer.get('error')}", hint=answer.get("detail")
        )
    records: list[dict[str, Any]] = answer.get("records", [])
    quarantine: dict[str, Any] = answer.get("quarantine", {})
    problems: list[str] = answer.get("errors", [])
    maintenance_on = answer.get("maintenance") or {}
    serving = serving_release(desired, observed)
    since = serving_since(desired, observed)
    paused = observed.paused
    out = {
        "host": observed.hostname,
        "serving": serving,
        "serving_since": since,
        # The unit Caddy sends the app's backend traffic to, as Caddy itself reported it.
        "serving_unit": serving_unit(desired, observed),
        "paused": None if paused is None else vars(paused),
        "held": None
        if observed.hold is None
        else vars(observed.hold) | {"passed": list(observed.hold.passed)},
        "maintenance": maintenance_on or None,
        "runs": records,
        "quarantined": quarantine,
        "problems": problems,
    }
    if args.json:
        return out
    print(
        f"{observed.hostname}: serves {serving}" + (f" since {since}" if since else "")
        if serving
        else f"{observed.hostname}: serves nothing the reconciler manages"
    )
    if paused is not None:
        print(f"PAUSED: {paused.describe()} (`reconcile resume` to let runs converge it again)")
    if observed.hold is not None:
        print(
            f"HELD: {observed.hold.describe()}; runs leave it there while the desired file names "
            f"{observed.hold.desired_version} (`reconcile resume` ends it)"
        )
    if maintenance_on.get("on"):
        print(
            f"maintenance: on since {maintenance_on.get('at', '?')} by {maintenance_on.get('by', '?')}: "
            f"{maintenance_on.get('reason') or 'no reason given'} (`reconcile maintenance off` ends it)"
        )
    if not records:
        print(f"No runs recorded on {executor.description} for {desired.app} yet.")
    for r in records:
        print(_history_line(r))
        if r.get("error"):
            print(f"    error: {r['error']}")
        back = r.get("rolled_back") or {}
        if back.get("to"):
            print(f"    rolled back to {back['to']}" + ("" if back.get("ok") else " - that failed too"))
    for key, info in sorted(quarantine.items()):
        # Entries are keyed by configuration; older hosts keyed them by version alone.
        version = info.get("version") or key
        config = f" (configuration {key})" if "version" in info else ""
        print(f"quarantined: {version}{config} since {info.get('at', '?')}: {info.get('reason', '')}")
    for problem in problems:
        print(f"problem: {problem}")
    return out


def _history_line(r: dict[str, Any]) -> str:
    kind = r.get("kind")
    when = r.get("finished", "?")
    if kind in ("pause", "resume"):
        why = f": {r['reason']}" if r.get("reason") else ""
        return f"{when}  {kind + 'd':<11} by {r.get('user', '?')}{why}"
    if kind == "unhold":
        return f"{when}  {'hold ended':<11} by {r.get('user', '?')} (was held at {r.get('version', '?')})"
    if kind == "exec":
        import shlex

        ended = f"exit {r['exit']}" if r.get("exit") is not None else str(r.get("error") or r.get("result"))
        command = shlex.join(str(w) for w in r.get("command") or [])
        return f"{when}  exec        by {r.get('user', '?')} in {r.get('release', '?')}: {command} ({ended})"
    if kind == "notify":
        outcome = "delivered" if r.get("ok") else f"NOT delivered ({r.get('error', '?')})"
        what = f"{r.get('event', '?')} to {r.get('webhook', '?')}"
        return f"{when}  notified    {what}: {outcome}, {r.get('attempts', '?')} attempt(s)"
    commit = (r.get("commit") or "-")[:12] + ("+dirty" if r.get("dirty") else "")
    n = len(r.get("actions", []))
    line = (
        f"{when}  {r.get('result', '?'):<11} {r.get('version', '?'):<12} "
        f"{commit:<18} {n} actions  by {r.get('user', '?')}"
    )
    if kind:
        line += f"  [{kind}]"
    if kind == "rollback" and r.get("reason"):
        line += f": {r['reason']}"
    return line
