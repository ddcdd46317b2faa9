"""python -m benchmarks.watch_latency: how fast watch mode reacts, and what an idle pass costs.

Boots one test host; (a) times file save -> plan -> serving the new version over --trials
trials for symlink-swap and blue-green; (b) measures no-op passes at --interval 0.5 with the
host's sshd counting exec channels. Writes benchmarks/watch.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.deploy_load import machine
from benchmarks.deploy_load.scenario import build_releases
from benchmarks.watch_latency import noop, report, trials
from tests.testhost import boot

REPORT = Path(__file__).resolve().parent.parent / "watch.md"
STRATEGIES = ("symlink-swap", "blue-green")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.watch_latency", description=__doc__)
    p.add_argument("--trials", type=int, default=12, help="file saves per strategy (default 12)")
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated")
    p.add_argument("--interval", type=float, default=0.5, help="drift interval for the no-op run")
    p.add_argument("--noop-seconds", type=float, default=15.0, help="how long the no-op run lasts")
    p.add_argument("--passes", type=int, default=50, help="in-process no-op passes and floor samples")
    p.add_argument("--health", default="timeout: 30", help="the health: section, YAML")
    p.add_argument("--out", type=Path, default=REPORT, help=f"the report (default {REPORT})")
    p.add_argument("--no-lock", action="store_true", help=f"do not take {machine.LOCK_PATH} (untimed runs)")
    return p.parse_args(argv)


def _git_repo(folder: Path) -> None:
    """The file lives in git, as the README asks, so each pass pays for its commit lookup."""
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid")
    env.update(GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid")
    subprocess.run(["git", "init", "-q", str(folder)], check=True, env=env)
    subprocess.run(["git", "-C", str(folder), "add", "desired-state.yaml"], check=True, env=env)
    subprocess.run(["git", "-C", str(folder), "commit", "-qm", "deploy"], check=True, env=env)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command = (
        "python -m benchmarks.watch_latency " + shlex.join(sys.argv[1:] if argv is None else argv)
    ).rstrip()
    # The CLI caches schema verdicts under XDG_CACHE_HOME; keep the benchmark's to itself.
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="bench-watch-cache-")
    all_trials: list[trials.Trial] = []
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp, machine.exclusive(not args.no_lock):
        artifacts = build_releases(Path(tmp) / "dist")
        with boot() as host:
            described = machine.describe(host)
            for strategy in args.strategies.split(","):
                print(f"(a) {strategy}: {args.trials} file saves under watch ...", flush=True)
                project = trials.new_project(Path(tmp) / strategy, artifacts, host)
                done = trials.run_trials(host, project, strategy, args.trials, args.health)
                for t in done:
                    print(
                        f"  -> {t.version}: plan {t.plan_s:.3f} s, api {t.api_s or 0:.3f} s, "
                        f"page {t.page_s or 0:.3f} s, converged {t.converged_s:.3f} s",
                        flush=True,
                    )
                all_trials += done
            print("(b) no-op passes ...", flush=True)
            project = trials.new_project(Path(tmp) / "noop", artifacts, host)
            trials.prepare(host, project, "symlink-swap", args.health)
            _git_repo(project.root)
            file = project.root / "desired-state.yaml"
            cli = noop.cli_noop(host, file, args.interval, args.noop_seconds)
            inproc = noop.in_process(host, file, args.passes)
            print(
                f"  CLI: {cli.passes} passes, observe median {noop.median(cli.observe_ms):.1f} ms, "
                f"{cli.channels} channels; in-process pass median {noop.median(inproc.pass_ms):.1f} ms",
                flush=True,
            )
    args.out.write_text(report.render(all_trials, cli, inproc, described, command, args.health))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
