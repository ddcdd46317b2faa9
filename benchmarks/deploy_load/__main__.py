"""python -m benchmarks.deploy_load: deploys and rollbacks under a steady request stream.

Boots one test host, and per strategy deploys 1.0.0, then during a stream of requests
deploys 2.0.0 and rolls back to 1.0.0; writes benchmarks/deploy-under-load.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import shlex
import sys
import tempfile
from pathlib import Path

from benchmarks.deploy_load import machine
from benchmarks.deploy_load.report import render, write_raw
from benchmarks.deploy_load.scenario import Settings, StrategyResult, build_releases, run_strategy
from tests.testhost import boot

STRATEGIES = ("restart", "symlink-swap", "blue-green")
REPORT = Path(__file__).resolve().parent.parent / "deploy-under-load.md"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.deploy_load", description=__doc__)
    p.add_argument("--rate", type=float, default=150.0, help="requests per second (default 150)")
    p.add_argument("--seconds", type=float, default=25.0, help="minimum stream length (default 25)")
    p.add_argument("--deploy-at", type=float, default=4.0, help="deploy this far into the stream")
    p.add_argument("--gap", type=float, default=4.0, help="seconds between deploy end and rollback start")
    p.add_argument("--tail", type=float, default=3.0, help="stream at least this long after the rollback")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated (default: all three)")
    p.add_argument(
        "--connections",
        default="close,keepalive",
        help="close (a new connection per request), keepalive (reused), or both (the default)",
    )
    p.add_argument(
        "--health", default="timeout: 30", help="the health: section, YAML (default 'timeout: 30')"
    )
    p.add_argument("--repeat", type=int, default=1, help="runs per strategy and connection mode (default 1)")
    p.add_argument("--out", type=Path, default=REPORT, help=f"the report (default {REPORT})")
    p.add_argument("--raw", type=Path, help="also write every sample and Caddy's journal here")
    p.add_argument("--no-lock", action="store_true", help=f"do not take {machine.LOCK_PATH} (untimed runs)")
    args = p.parse_args(argv)
    unknown = set(args.strategies.split(",")) - set(STRATEGIES)
    if unknown:
        p.error(f"unknown strategies: {', '.join(sorted(unknown))}")
    if not set(args.connections.split(",")) <= {"close", "keepalive"}:
        p.error("--connections takes close, keepalive or close,keepalive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = (
        "python -m benchmarks.deploy_load " + shlex.join(sys.argv[1:] if argv is None else argv)
    ).rstrip()
    settings = Settings(
        rate=args.rate,
        seconds=args.seconds,
        deploy_at=args.deploy_at,
        gap=args.gap,
        tail=args.tail,
        health=args.health,
    )
    # The CLI caches schema verdicts under XDG_CACHE_HOME; keep the benchmark's to itself.
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="bench-load-cache-")
    results: list[StrategyResult] = []
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp, machine.exclusive(not args.no_lock):
        artifacts = build_releases(Path(tmp) / "dist")
        with boot() as host:
            described = machine.describe(host)
            runs = itertools.product(
                args.connections.split(","), args.strategies.split(","), range(1, args.repeat + 1)
            )
            for mode, strategy, run in runs:
                print(f"{strategy}, {mode}, run {run}: deploy and rollback under {args.rate:g} requests/s")
                mine = dataclasses.replace(settings, keepalive=mode == "keepalive")
                result = run_strategy(host, artifacts, Path(tmp), strategy, mine)
                result.run = run
                for p in result.phases:
                    print(
                        f"  {p.name:<16} sent {p.sent:5d}  failed {p.failed_total:4d} {dict(p.failed) or ''}"
                        f"  p99 {p.p99_ms:7.0f} ms  worst {p.max_ms:7.0f} ms",
                        flush=True,
                    )
                results.append(result)
    args.out.write_text(render(results, settings, described, command))
    if args.raw:
        write_raw(results, args.raw)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
