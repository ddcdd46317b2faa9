"""`reconcile`: converge a host to desired-state.yaml, once or continuously.

Exit codes: 0 converged (or, with --dry-run, nothing to do); 2 with --dry-run: changes
pending; 1 error (nothing applied when the input was bad); 3 the desired release failed its
health check and the previous release serves again, or it is quarantined from an earlier run;
4 the host is paused, or held by `reconcile rollback`.
"""

from __future__ import annotations

import argparse
import os
import sys

from reconciler import __version__
from reconciler.errors import ReconcilerError

# Kept here, not imported from hostcmds: deciding which parser to use must stay cheap.
SUBCOMMANDS = (
    "status",
    "validate",
    "init",
    "pause",
    "resume",
    "maintenance",
    "logs",
    "exec",
    "render",
    "rollback",
    "releases",
)
DAY_TWO = ("logs", "exec", "render")

EPILOG = """\
examples:
  reconcile --once --dry-run          show what would change and why (exit 2 if anything)
  reconcile --once                    converge the host once, then exit
  reconcile --once --json             the same, printing one JSON object
  reconcile                           keep converging: on file changes and on drift
  reconcile status                    what the host serves, its recent runs, pause, quarantine
  reconcile init --app NAME           write a commented desired-state.yaml that validates
  reconcile validate                  check desired-state.yaml, its secrets and artifact, no host
  reconcile validate --offline        the same without secrets, keys or artifacts (CI on a PR)
  reconcile maintenance on --reason "db repair"   answer 503 with a maintenance page; `off` ends it
  reconcile rollback [VERSION] --reason TEXT   back to the previous good state (or VERSION's),
                                      and hold the host there: runs leave it until the file
                                      names something else or `reconcile resume`
  reconcile releases                  the releases on the host, what serves, what rollback picks
  reconcile pause --reason TEXT       stop every run from changing the host (an incident)
  reconcile resume                    let runs converge it again (ends a pause and a hold)
  reconcile logs -f backend           follow the backend's journal (every host of a fleet)
  reconcile exec -- sqlite3 /var/lib/choiros/choiros.db   a one-off command as the backend runs
  reconcile render --to out/          the files a desired state writes, without a host

each subcommand has its own --help (e.g. reconcile exec --help).

exit codes: 0 converged / nothing to do, 1 error, 2 changes pending (--dry-run),
            3 release failed and was rolled back, or is quarantined,
            4 the host is paused, or held by `reconcile rollback`: nothing was deployed
docs: the README and schemas/desired-state.schema.json describe every field.
"""


def _common(
    p: argparse.ArgumentParser,
    *,
    short_file: bool = True,
    short_identity: bool = True,
    json_help: str | None = "print one JSON object on stdout",
) -> None:
    """The options every command shares. `logs` takes -f for --follow and `exec` -i for
    --interactive, as journalctl and docker do; there the file and key have long names only."""
    p.add_argument(
        *(["-f"] if short_file else []),
        "--file",
        default=os.environ.get("RECONCILER_FILE", "desired-state.yaml"),
        help="the desired-state file (default: ./desired-state.yaml, or $RECONCILER_FILE)",
    )
    p.add_argument(
        "--target", help="converge this target instead of the file's (local or ssh://user@host:port)"
    )
    p.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="HOST|GROUP",
        help="act only on these hosts or groups of a fleet (repeatable, or comma-separated)",
    )
    if json_help is not None:
        p.add_argument("--json", action="store_true", help=json_help)
    p.add_argument(
        *(["-i"] if short_identity else []),
        "--identity",
        action="append",
        default=[],
        metavar="KEY",
        help="SSH private key (repeatable)",
    )
    p.add_argument("--known-hosts", metavar="FILE", help="known_hosts file (default: ~/.ssh/known_hosts)")
    p.add_argument(
        "--ssh",
        choices=["paramiko", "openssh"],
        default=os.environ.get("RECONCILER_SSH", "paramiko"),
        help="SSH transport: paramiko (default), or openssh: the system ssh client, honouring all of "
        "ssh_config and keeping a master connection for 60 s between runs ($RECONCILER_SSH)",
    )
    p.add_argument(
        "--accept-new-host-key",
        action="store_true",
        help="trust and remember an unknown host key on first use (a changed key is still refused)",
    )
    p.add_argument(
        "--require-checksum",
        action="store_true",
        help="refuse a desired state whose release has no sha256 (a CI policy)",
    )
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="log every step to stderr (-vv: also no-op passes)"
    )
    p.add_argument(
        "--log-format", choices=["console", "json"], help="stderr log format (default: console on a terminal)"
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reconcile",
        description="Converge a host to the release and configuration in desired-state.yaml.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"reconcile {__version__}")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="converge once and exit")
    mode.add_argument("--watch", action="store_true", help="keep converging (the default without --once)")
    p.add_argument("--dry-run", action="store_true", help="plan only: print what would change and why")
    p.add_argument(
        "--format",
        choices=["text", "json", "markdown"],
        default="text",
        help="what --once prints on stdout: text (default), json (= --json), or markdown: the plan with "
        "the diff of every file it writes, secret values masked, for a pull request comment",
    )
    p.add_argument(
        "--lock-timeout",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another run's lock (default: fail at once)",
    )
    p.add_argument(
        "--retry-quarantined", action="store_true", help="deploy the desired release even if it failed before"
    )
    p.add_argument(
        "--adopt",
        action="store_true",
        help="replace files at this app's places that the reconciler did not write (units, env "
        "file, the main Caddyfile's own site for proxy.site), keeping a dated backup on the host",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --once: apply even though the host is paused (`reconcile pause`)",
    )
    p.add_argument(
        "--require-committed",
        action="store_true",
        help="refuse to apply a desired-state file with uncommitted changes",
    )
    w = p.add_argument_group("watch mode")
    w.add_argument(
        "--interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="drift check period (default 60, with +-10%% jitter)",
    )
    w.add_argument(
        "--follow",
        metavar="BRANCH",
        help="git fetch this branch of origin and fast-forward to it, so a push deploys",
    )
    w.add_argument(
        "--fetch-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how often --follow fetches (default 60; SIGHUP fetches at once)",
    )
    w.add_argument(
        "--metrics-listen",
        metavar="ADDR",
        help="serve Prometheus metrics on ADDR (HOST:PORT, e.g. 127.0.0.1:9108; off by default)",
    )
    w.add_argument(
        "--max-backoff",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="longest wait between retries of a failing revision (default 300)",
    )
    _common(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    subcommand = args_list[0] if args_list and args_list[0] in SUBCOMMANDS else None
    args = None if subcommand else build_parser().parse_args(args_list)
    from reconciler.cli import commands

    if args is not None:
        args.json = args.json or args.format == "json"
        args.markdown = args.format == "markdown" and not args.json
    try:
        if subcommand in DAY_TWO:
            from reconciler.cli.daytwo import run

            return run(subcommand, args_list[1:], _common)
        if subcommand:
            from reconciler.cli.hostcmds import run_subcommand

            return run_subcommand(subcommand, args_list[1:], _common)
        assert args is not None
        return commands.once(args) if args.once else commands.watch(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ReconcilerError as exc:  # a last resort: the commands report their own errors
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
