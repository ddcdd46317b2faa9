"""`reconcile validate`: everything that can be known about a desired state without a host,
in one pass: the file, its secrets, its artifact and what is inside it, --limit.

Exit 0 when nothing stops a run (warnings are printed, and allowed), 1 otherwise. --offline
checks a file where its secrets, keys and artifacts are not (CI on a pull request) and says
what it did not read; --json prints one object with one entry per problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reconciler.cli.commands import validated_cache
from reconciler.errors import InputProblem, InvalidDesiredState
from reconciler.spec.load import Checks, check


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--offline",
        action="store_true",
        help="check without secrets, keys or artifacts (CI on a pull request): ${VAR}s need not be set, "
        "from_file/from_age files must exist but are not read or decrypted, a missing artifact is a "
        "warning; says what it skipped",
    )


def validate(args: argparse.Namespace) -> int:
    checks = Checks(
        artifacts=True, offline=args.offline, require_checksum=args.require_checksum, limit=tuple(args.limit)
    )
    checked = check(args.file, target_override=args.target, cache_dir=validated_cache(), checks=checks)
    problems = list(checked.problems)
    desired = checked.desired
    if checked.release is not None:
        from reconciler.engine.artifact import inspect  # tar machinery: only when there is a release

        problems += inspect(checked.release)
    problems.sort(key=lambda p: (p.line or 0, p.column or 0, p.field))
    errors = [p for p in problems if p.is_error]
    warnings = [p for p in problems if not p.is_error]
    valid = not errors
    if args.json:
        out: dict[str, Any] = {
            "valid": valid,
            "result": "valid" if valid else "invalid",
            "file": str(args.file),
            "offline": args.offline,
            "problems": [p.as_json() for p in problems],
            "errors": len(errors),
            "warnings": len(warnings),
            "skipped": list(checked.skipped),
        }
        if desired is not None:
            out.update(
                app=desired.app,
                version=desired.release.version,
                strategy=desired.strategy,
                target=str(desired.target),
                hosts=[h.name for h in desired.hosts],
            )
        print(json.dumps(out, indent=2))
        return 0 if valid else 1
    print_warnings(warnings)
    if checked.skipped:
        print(f"skipped (--offline): {'; '.join(checked.skipped)}", file=sys.stderr)
    if not valid:
        print(f"error: {InvalidDesiredState(errors)}", file=sys.stderr)
        return 1
    assert desired is not None
    hosts = f"{len(desired.hosts)} hosts" if desired.is_fleet else f"target {desired.target}"
    noted = f"; {len(warnings)} warning{'s' if len(warnings) != 1 else ''}" if warnings else ""
    offline = ", offline" if args.offline else ""
    what = f"{desired.app} {desired.release.version}, {desired.strategy}, {hosts}"
    print(f"{args.file}: valid{offline} ({what}){noted}")
    return 0


def print_warnings(warnings: list[InputProblem]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
