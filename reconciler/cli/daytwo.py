"""The day-two subcommands: `logs` (the app's journal), `exec` (a one-off command as the
backend runs) and `render` (the files a desired state writes, without a host)."""

from __future__ import annotations

import argparse
import shlex
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from reconciler.cli.commands import fail, load_desired, print_warnings, setup_logging, ssh_options
from reconciler.errors import InputProblem, InvalidDesiredState, ReconcilerError
from reconciler.spec.model import DesiredState, HostSpec

AddCommon = Callable[..., None]
EXIT_NOT_RUN = 125  # exec: the command did not start (as `docker run`)


def run(name: str, argv: list[str], add_common: AddCommon) -> int:
    if name == "logs":
        return logs(argv, add_common)
    if name == "exec":
        return exec_(argv, add_common)
    return render(argv)


# --- logs ----------------------------------------------------------------------------------


def logs_parser(add_common: AddCommon) -> argparse.ArgumentParser:
    from reconciler.engine.logs import DEFAULT_LINES

    p = argparse.ArgumentParser(
        prog="reconcile logs",
        description="The journal of the app's units on its host (or every host of a fleet, each "
        "line prefixed by the host's name), read over the same connection as a run.",
        epilog="examples:\n"
        "  reconcile logs                       the last 100 lines of the backend, frontend and tasks\n"
        "  reconcile logs -f backend            follow the backend until Ctrl-C\n"
        '  reconcile logs --since "10 min ago" --json   journald\'s fields, one JSON object a line\n'
        "in this command -f means --follow: give the desired-state file as --file FILE\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "which",
        nargs="*",
        metavar="backend|frontend|tasks|blue|green",
        help="whose journal: the backend (its unit, or both colours), the dev-server frontend, the "
        "release tasks' units, one colour (default: backend, frontend and tasks)",
    )
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
    p.add_argument(
        "--since",
        metavar="TIME",
        help='from this time on, as journalctl reads it ("2024-05-01 12:00", "today", "10 min ago")',
    )
    p.add_argument(
        "-n",
        "--lines",
        type=_count,
        metavar="LINES",
        help=f"the last LINES lines (default {DEFAULT_LINES}, or all of them with --since)",
    )
    add_common(p, short_file=False, json_help="print each entry as journald has it: one JSON object a line")
    return p


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of lines, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more lines, got {value}")
    return value


def logs(argv: list[str], add_common: AddCommon) -> int:
    from reconciler.cli.journal_lines import host_json, text_line
    from reconciler.engine.fleet import select
    from reconciler.engine.logs import KINDS, logs_request, read_hosts
    from reconciler.executors.connect import executor_for

    parser = logs_parser(add_common)
    args = parser.parse_args(argv)
    unknown = [w for w in args.which if w not in KINDS]
    if unknown:
        parser.error(f"unknown unit kind {unknown[0]!r}: choose from {', '.join(KINDS)}")
    setup_logging(args)
    try:
        desired = load_desired(args)
        hosts = select(desired, args.limit)
    except InvalidDesiredState as exc:
        return fail(args, exc)
    print_warnings(desired)
    request = logs_request(
        desired, args.which, follow=args.follow, lines=args.lines, since=args.since, all_fields=args.json
    )
    fleet = len(hosts) > 1
    width = max(len(h.name) for h in hosts)
    printing = threading.Lock()

    def show(host: HostSpec, line: str) -> None:
        if args.json:
            out = host_json(line, host.name) if fleet else line
        else:
            out = text_line(line)
            if fleet:
                out = f"{host.name:<{width}} | {out}"
        with printing:
            sys.stdout.write(out + "\n")
            sys.stdout.flush()

    pairs = [(h, executor_for(desired.for_host(h).target, ssh_options(args))) for h in hosts]
    errors = read_hosts(pairs, request, show)
    code = 0
    for name, error in errors.items():
        if error is not None:
            prefix = f"{name}: " if fleet else ""
            print(f"error: {prefix}{error}", file=sys.stderr)
            code = max(code, error.exit_code)
    return code


# --- exec ----------------------------------------------------------------------------------


def exec_parser(add_common: AddCommon) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reconcile exec",
        usage="reconcile exec [--release VERSION] [-i] [-t] [options] -- COMMAND [ARG...]",
        description="Run a one-off command on the host as the backend runs: from the serving "
        "release's folder (or in a container of its image), with the app's environment file, as "
        "backend.user; a transient systemd unit, exactly like release tasks. Its exit status is "
        "the command's (125: it could not be started, 130: interrupted); the host's history "
        "records who ran what and how it ended, never its output.",
        epilog="examples:\n"
        "  reconcile exec -- sqlite3 /var/lib/choiros/choiros.db    a console on the app's database\n"
        "  reconcile exec -- bin/backend --migrate    a program of the release (a path in its folder)\n"
        "  reconcile exec --release 1.4.1 -- bin/report   from another release on the host\n"
        "  reconcile exec --limit web2 -- sh          on one host of a fleet (exec runs on one)\n"
        "in this command -i means --interactive: give an SSH key as --identity KEY\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--release", metavar="VERSION", help="run from this release, which must be on the host "
        "(default: the one serving)"
    )  # fmt: skip
    p.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="pass stdin to the command (the default when stdin is a terminal)",
    )
    p.add_argument(
        "-t",
        "--tty",
        action="store_true",
        help="give the command a terminal (the default when stdin is a terminal); -it for both",
    )
    add_common(p, short_identity=False, json_help=None)
    p.set_defaults(json=False)
    return p


def exec_(argv: list[str], add_common: AddCommon) -> int:
    from reconciler.engine import oneoff
    from reconciler.engine.fleet import select
    from reconciler.executors.connect import executor_for

    parser = exec_parser(add_common)
    cut = argv.index("--") if "--" in argv else len(argv)
    options, command = argv[:cut], argv[cut + 1 :]
    args, stray = parser.parse_known_args(options)
    if stray or not command:
        example = shlex.join(stray) if stray else "sqlite3 /var/lib/APP/APP.db"
        parser.error(f"put the command after --, as in: reconcile exec [options] -- {example}")
    setup_logging(args)
    if not (args.interactive or args.tty):
        args.interactive = args.tty = sys.stdin.isatty()
    try:
        desired = load_desired(args)
        hosts = select(desired, args.limit)
    except InvalidDesiredState as exc:
        fail(args, exc)
        return EXIT_NOT_RUN
    print_warnings(desired)
    if len(hosts) > 1:
        names = [h.name for h in hosts]
        print(
            f"error: exec runs on one host, and {len(hosts)} are selected ({', '.join(names)}): "
            "nothing was run\n"
            f"  hint: pick one with --limit NAME; to run it on each in turn: for h in {' '.join(names)}; "
            "do reconcile exec --limit $h -- ...; done",
            file=sys.stderr,
        )
        return EXIT_NOT_RUN
    one = desired.for_host(hosts[0])
    executor = executor_for(one.target, ssh_options(args))
    try:
        try:
            command_spec = oneoff.prepare(
                one, executor, command, args.release, interactive=args.interactive, tty=args.tty
            )
            return oneoff.run(one, executor, command_spec, interactive=args.interactive, tty=args.tty)
        except ReconcilerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_NOT_RUN
    finally:
        executor.close()


# --- render --------------------------------------------------------------------------------


def render_parser() -> argparse.ArgumentParser:
    import os

    p = argparse.ArgumentParser(
        prog="reconcile render",
        description="Print the files a desired state writes on a host, without a host: the units, "
        "the environment file (secret values shown as (secret)), the app's Caddy fragment and the "
        "main Caddyfile, as a first deploy writes them on an empty host (with an image release: "
        "for the runtime the file names, Podman by default).",
        epilog="examples:\n"
        "  reconcile render                     every file, with a header naming its path\n"
        "  reconcile render --to out/           written under out/, mirroring the host's paths\n"
        "  reconcile render --host web2         the files of one host of a fleet (its env overrides)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "-f",
        "--file",
        default=os.environ.get("RECONCILER_FILE", "desired-state.yaml"),
        help="the desired-state file (default: ./desired-state.yaml, or $RECONCILER_FILE)",
    )
    p.add_argument("--host", metavar="NAME", help="render for this host of a fleet (default: each host)")
    p.add_argument("--to", metavar="DIR", help="write the files under DIR instead of printing them")
    p.set_defaults(json=False, target=None, limit=[], verbose=0, log_format=None)
    return p


def render(argv: list[str]) -> int:
    from reconciler.plan.preview import RenderedFile, rendered_files, runtime

    args = render_parser().parse_args(argv)
    setup_logging(args)
    try:
        desired = load_desired(args)
        hosts = _render_hosts(args, desired)
    except InvalidDesiredState as exc:
        return fail(args, exc)
    print_warnings(desired)
    per_host: list[tuple[HostSpec, list[RenderedFile]]] = [
        (h, rendered_files(desired.for_host(h), h.name)) for h in hosts
    ]
    fleet = len(hosts) > 1
    if args.to:
        for host, files in per_host:
            base = Path(args.to) / host.name if fleet else Path(args.to)
            for f in files:
                dest = base / f.path.lstrip("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(f.content, encoding="utf-8")
                dest.chmod(f.mode)
                print(f"wrote {dest}")
        return 0
    run_with = runtime(desired)
    print(
        f"# {desired.app} {desired.release.version} ({desired.strategy}): the files a first deploy "
        "writes on an empty host"
        + (f", images run by {run_with}" if run_with else "")
        + "; secret values shown as (secret)"
    )
    for host, files in per_host:
        if fleet:
            print(f"\n## {host.name} ({host.target})")
        for f in files:
            print(f"\n==> {f.path} (mode {f.mode:04o}) <==")
            sys.stdout.write(f.content)
    main_file = desired.proxy.caddyfile
    print(
        f"\n# On a host whose {main_file} someone else wrote, only its import line is added "
        f"(import {desired.proxy.apps_dir}/*.caddy); the rest of that file is left as it is."
    )
    return 0


def _render_hosts(args: argparse.Namespace, desired: DesiredState) -> list[HostSpec]:
    if args.host is None:
        return list(desired.hosts)
    for host in desired.hosts:
        if host.name == args.host:
            return [host]
    names = ", ".join(h.name for h in desired.hosts)
    raise InvalidDesiredState(
        [
            InputProblem(
                str(args.file), None, None, "target", f"no host named {args.host!r}", f"hosts: {names}"
            )
        ]
    )
