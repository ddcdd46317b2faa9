"""python -m benchmarks.fleet_peers [--hosts N] [--sizes 1,4,8,16] [--runs N] [--deploy-runs N]"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.fleet_peers import report
from benchmarks.fleet_peers.fleet import RESULTS_MD
from benchmarks.fleet_peers.runner import FleetResults, Options, run
from benchmarks.peers import report as peers_report
from benchmarks.peers.runner import refuse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fleet_peers",
        description="Time the reconciler against pyinfra and Ansible on a fleet of test hosts, same state.",
    )
    parser.add_argument("--hosts", type=int, default=16, help="test hosts to boot (default 16)")
    parser.add_argument(
        "--sizes", default="1,4,8,16", help="fleet sizes timed for the no-op (1 and --hosts always are)"
    )
    parser.add_argument("--runs", type=int, default=7, help="no-op runs per tool and size (default 7)")
    parser.add_argument("--deploy-runs", type=int, default=3, help="rolling deploys per tool (default 3)")
    parser.add_argument("--no-peers", action="store_true", help="only ours")
    parser.add_argument("--no-deploy", action="store_true", help="skip the rolling deploy")
    parser.add_argument("--no-profile", action="store_true", help="skip profiling ours' fleet path")
    parser.add_argument("--no-watch", action="store_true", help="skip the fleet watch-mode pass")
    parser.add_argument("--out", type=Path, default=None, help=f"report file (default {RESULTS_MD})")
    parser.add_argument("--render", type=Path, metavar="RESULTS_JSON", help="only write the report again")
    args = parser.parse_args(argv)
    if args.render is not None:
        saved = FleetResults(**json.loads(args.render.read_text()))
        failed = peers_report.failures(saved)
        out = args.out or (Options.failed_out if failed else RESULTS_MD)
        out.write_text(report.render(saved))
        print(f"wrote {out}")
        return refuse(failed)
    if args.hosts < 2 or args.runs < 1 or args.deploy_runs < 1:
        parser.error("--hosts must be at least 2, --runs and --deploy-runs at least 1")
    opts = Options(
        hosts=args.hosts,
        sizes=[int(s) for s in args.sizes.split(",") if s.strip()],
        runs=args.runs,
        deploy_runs=args.deploy_runs,
        peers=not args.no_peers,
        deploy=not args.no_deploy,
        profile=not args.no_profile,
        watch=not args.no_watch,
    )
    if args.out is not None:
        opts.out = args.out
    opts.args = " ".join(sys.argv[1:] if argv is None else argv)
    results = run(opts, lambda line: print(line, flush=True))
    return refuse(peers_report.failures(results))


if __name__ == "__main__":
    sys.exit(main())
