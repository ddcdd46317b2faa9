"""python -m benchmarks.peers [--runs N] [--quick] [--no-peers] [--out FILE]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.peers import report
from benchmarks.peers.equivalence import TEXT
from benchmarks.peers.paths import RESULTS_MD, WORK
from benchmarks.peers.runner import Options, load_saved, refuse, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description="Time the reconciler against Ansible and pyinfra on one test host, same state.",
    )
    parser.add_argument("--runs", type=int, default=None, help="timed runs per tool and phase (default 9)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 runs, no profile, peers only if already installed; "
        "writes benchmarks/.work/peers/RESULTS-quick.md",
    )
    parser.add_argument("--no-peers", action="store_true", help="only ours and the paramiko floor")
    parser.add_argument("--no-change", action="store_true", help="skip the change runs")
    parser.add_argument("--out", type=Path, default=None, help=f"report file (default {RESULTS_MD})")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS_JSON",
        help="only write the report again from a results.json of an earlier run",
    )
    args = parser.parse_args(argv)
    if args.render is not None:
        saved = load_saved(args.render)
        failed = report.failures(saved)
        out = args.out or (Options.failed_out if failed else RESULTS_MD)
        out.write_text(report.render(saved, TEXT))
        print(f"wrote {out}")
        return refuse(failed)
    opts = Options(peers=not args.no_peers, change=not args.no_change)
    if args.quick:
        opts.runs, opts.install, opts.profile = 2, False, False
        opts.out = WORK / "RESULTS-quick.md"
        opts.failed_out = WORK / "RESULTS-quick-failed.md"
        opts.json_out = WORK / "results-quick.json"
    if args.runs is not None:
        if args.runs < 1:
            parser.error("--runs must be at least 1")
        opts.runs = args.runs
    if args.out is not None:
        opts.out = args.out
    opts.args = " ".join(sys.argv[1:] if argv is None else argv)
    results = run(opts, lambda line: print(line, flush=True))
    return refuse(report.failures(results))


if __name__ == "__main__":
    sys.exit(main())
