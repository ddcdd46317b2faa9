"""python -m benchmarks.chaos: a chaos soak on a real test host (see benchmarks/chaos/__init__.py).

Builds the example app's releases, boots one test host with a second app on it, and per
strategy runs its iterations under load; writes benchmarks/chaos.md and the soak's section of
benchmarks/RESULTS.md. Exits 1 when a goal is missed or the run was cut short, 2 when it
could not set itself up (then no figure is given).
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.chaos.analysis import Figures, Goal, figures, goals
from benchmarks.chaos.report import Run, failing_table, render, strategy_table, update_results, write_raw
from benchmarks.chaos.soak import Settings, Soak, StrategyResult
from tests.testhost import TestHost

STRATEGIES = ("blue-green", "restart", "symlink-swap")
FULL = {"blue-green": 500, "restart": 150, "symlink-swap": 150}
SMOKE = 2
HERE = Path(__file__).resolve().parent.parent
REPORT = HERE / "chaos.md"
RESULTS_MD = HERE / "RESULTS.md"

Say = Callable[[str], None]


@dataclass
class Options:
    seed: int | None = None
    iterations: dict[str, int] = field(default_factory=lambda: dict(FULL))
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    max_minutes: float = 600.0
    settings: Settings = field(default_factory=Settings)
    out: Path | None = REPORT
    results: Path | None = RESULTS_MD
    raw: Path | None = None
    lock: bool = True
    lock_wait: float | None = None  # seconds to wait for the benchmarks' lock; None: as long as it takes
    command: str = "python -m benchmarks.chaos"
    render: Path | None = None  # render the report from a soak's records, run nothing


@dataclass
class Outcome:
    seed: int
    results: list[StrategyResult]
    figures: list[Figures]
    goals: list[Goal]
    setup_errors: list[str]
    report: str = ""
    command: str = ""
    started: str = ""
    machine: list[str] = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)

    @property
    def exit_code(self) -> int:
        if self.setup_errors and not self.figures:
            return 2
        missed = any(g.met is False for g in self.goals)
        short = any(f.stopped_early for f in self.figures)
        return 1 if missed or short or self.setup_errors else 0


def run(opts: Options, say: Say = print) -> Outcome:
    from benchmarks.deploy_load.machine import describe
    from benchmarks.peers.runner import bench_lock
    from tests.deploying import build_artifacts
    from tests.testhost import boot

    seed = opts.seed if opts.seed is not None else random.SystemRandom().randrange(1, 1_000_000)
    # The command given in the report repeats this run: it names the seed, drawn or not.
    command = opts.command if "--seed" in opts.command else f"{opts.command} --seed {seed}"
    say(f"seed {seed}: {command}")
    started = time.monotonic()
    deadline = started + opts.max_minutes * 60
    outcome = Outcome(seed, [], [], [], [], command=command, settings=opts.settings)
    outcome.started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    # The CLI caches schema verdicts under XDG_CACHE_HOME; keep the soak's to itself.
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="bench-chaos-cache-")
    lock = bench_lock(opts.lock_wait, say) if opts.lock else nullcontext()
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp, lock:
        try:
            artifacts = build_artifacts(Path(tmp) / "dist")
        except Exception as exc:
            outcome.setup_errors.append(f"building the example app's releases failed: {exc}")
            return outcome
        try:
            host_context = boot()
            host = host_context.__enter__()
        except Exception as exc:
            outcome.setup_errors.append(f"booting the test host failed: {type(exc).__name__}: {exc}")
            return outcome
        try:
            outcome.machine = describe(host)
            _strategies(opts, host, artifacts, Path(tmp), seed, deadline, outcome, say)
        finally:
            host_context.__exit__(None, None, None)
    if opts.raw is not None:
        write_raw(outcome.results, opts.raw)
        say(f"wrote the raw records to {opts.raw}")
    return finish(outcome, opts, say)


def finish(outcome: Outcome, opts: Options, say: Say) -> Outcome:
    """Goals, the report and RESULTS.md, from what the soak recorded."""
    outcome.goals = goals(outcome.figures)
    for g in outcome.goals:
        say(f"  {'met ' if g.met else 'MISSED' if g.met is False else 'n/a '}  {g.what}: {g.measured}")
    if outcome.figures:
        report = Run(
            outcome.command,
            outcome.seed,
            outcome.started,
            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            outcome.machine,
            outcome.settings,
            outcome.figures,
            outcome.goals,
            outcome.setup_errors,
        )
        outcome.report = render(report)
        for line in ["", *strategy_table(outcome.figures), "", *failing_table(outcome.figures), ""]:
            say(line)
        if opts.out is not None:
            opts.out.write_text(outcome.report)
            say(f"wrote {opts.out}")
            if opts.results is not None:
                update_results(opts.results, opts.out)
                say(f"updated {opts.results}")
    for error in outcome.setup_errors:
        say(f"FAILED: {error}")
    return outcome


def save(outcome: Outcome, folder: Path) -> None:
    """Everything recorded so far, to render the report again (--render) without a new soak."""
    folder.mkdir(parents=True, exist_ok=True)
    kept = Outcome(
        outcome.seed,
        outcome.results,
        [],
        [],
        outcome.setup_errors,
        command=outcome.command,
        started=outcome.started,
        machine=outcome.machine,
        settings=outcome.settings,
    )
    (folder / "outcome.pickle").write_bytes(pickle.dumps(kept))


def render_saved(folder: Path, opts: Options, say: Say) -> Outcome:
    outcome: Outcome = pickle.loads((folder / "outcome.pickle").read_bytes())  # our own file
    outcome.figures = [figures(r) for r in outcome.results]
    return finish(outcome, opts, say)


def _strategies(
    opts: Options,
    host: TestHost,
    artifacts: dict[str, Path],
    workdir: Path,
    seed: int,
    deadline: float,
    outcome: Outcome,
    say: Say,
) -> None:
    """Each strategy in turn on the host: set up, soak, figures. A strategy that cannot be set
    up, or whose soak breaks, gives no figure: it is a setup error."""
    left = {s: opts.iterations.get(s, SMOKE) for s in opts.strategies}
    for number, strategy in enumerate(opts.strategies):
        # Each strategy gets its share of the time that is left.
        share = left[strategy] / max(1, sum(left.values()))
        mine = time.monotonic() + max(0.0, deadline - time.monotonic()) * share
        count = left.pop(strategy)
        soak = Soak(host, artifacts, workdir, strategy, seed, opts.settings, say)
        try:
            error = soak.set_up(fresh_host=number == 0)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error:
            outcome.setup_errors.append(f"{strategy}: setting up failed: {error}")
            say(f"{strategy}: setting up failed: {error}")
            continue
        say(f"{strategy}: {count} iterations under {opts.settings.rate:g} requests/s")
        try:
            result = soak.run(count, mine)
        except Exception as exc:
            say(traceback.format_exc())
            outcome.setup_errors.append(f"{strategy}: the soak broke: {type(exc).__name__}: {exc}")
            continue
        outcome.results.append(result)
        fig = figures(result)
        outcome.figures.append(fig)
        say(_summary(fig))
        if opts.raw is not None:
            save(outcome, opts.raw)  # a strategy's records are kept as soon as it is done


def _summary(f: Figures) -> str:
    return (
        f"{f.strategy}: {f.iterations} iterations, {f.requests:,} requests, {f.failed} failed "
        f"({sum(f.failed_outage.values())} during outages the disturbances caused), {f.ungated} answers "
        f"by an ungated process ({f.ungated_reboot} after reboots), {f.uncertain} undecided; "
        f"{len(f.not_gated)} of {f.checks} checks not serving a gated state; "
        f"{len(f.lost_ids)} of {f.acknowledged:,} acknowledged rows lost"
    )


def _iterations(text: str, strategies: list[str]) -> dict[str, int]:
    if "=" not in text:
        return dict.fromkeys(strategies, int(text))
    out = dict(FULL)
    for part in text.split(","):
        name, _, count = part.partition("=")
        out[name.strip()] = int(count)
    return out


def parse(argv: list[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    p.add_argument("--seed", type=int, help="the seed of every random choice (default: a new one, printed)")
    p.add_argument(
        "--iterations",
        help="per strategy: N, or STRATEGY=N,... (default: "
        + ",".join(f"{k}={v}" for k, v in FULL.items())
        + f"; --smoke: {SMOKE})",
    )
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated, run in this order")
    p.add_argument("--smoke", action="store_true", help=f"{SMOKE} iterations per strategy, no report written")
    p.add_argument("--max-minutes", type=float, help="time cap for the whole soak (default 600; --smoke: 10)")
    p.add_argument("--rate", type=float, default=Settings.rate, help="requests per second (default 20)")
    p.add_argument(
        "--gate-poll", type=float, default=Settings.gate_poll, help="seconds between reads of gates.json"
    )
    p.add_argument("--out", type=Path, help=f"the report (default {REPORT}; --smoke: none)")
    p.add_argument("--no-results", action="store_true", help="do not update benchmarks/RESULTS.md")
    p.add_argument("--raw", type=Path, help="also write every iteration and request here")
    p.add_argument("--no-lock", action="store_true", help="do not take the benchmarks' lock")
    p.add_argument(
        "--render",
        type=Path,
        metavar="RAW",
        help="no soak: render the report again from the records a soak kept with --raw RAW",
    )
    args = p.parse_args(argv)
    strategies = [s for s in args.strategies.split(",") if s]
    unknown = set(strategies) - set(STRATEGIES)
    if unknown:
        p.error(f"unknown strategies: {', '.join(sorted(unknown))}")
    if args.iterations:
        iterations = _iterations(args.iterations, strategies)
    else:
        iterations = dict.fromkeys(strategies, SMOKE) if args.smoke else dict(FULL)
    out = args.out if args.out is not None else (None if args.smoke else REPORT)
    shown = sys.argv[1:] if argv is None else argv
    return Options(
        render=args.render,
        seed=args.seed,
        iterations=iterations,
        strategies=strategies,
        max_minutes=args.max_minutes or (10.0 if args.smoke else 600.0),
        settings=Settings(rate=args.rate, gate_poll=args.gate_poll),
        out=out,
        results=None if (args.no_results or out is None) else RESULTS_MD,
        raw=args.raw,
        lock=not args.no_lock,
        command=("python -m benchmarks.chaos " + shlex.join(shown)).rstrip(),
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    say = lambda line: print(line, flush=True)  # noqa: E731
    if opts.render is not None:
        return render_saved(opts.render, opts, say).exit_code
    return run(opts, say).exit_code


if __name__ == "__main__":
    sys.exit(main())
