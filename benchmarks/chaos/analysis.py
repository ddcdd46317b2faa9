"""The figures of one strategy's soak, and the goals of issue #22. Pure: a function of what
the soak recorded.

Failed requests: no answer, or a status of 500 or more. A Caddy restart and a reboot take the
site down by themselves, and so does Caddy pointed by hand at a port where nothing listens
(until the next run puts the fragment back): failed requests that overlap those outage windows
are counted apart, as the disturbance's; the blue-green goal is about the others.

Answers by an ungated process: an answer whose X-Choiros-Invocation had no gate record at the
time (gatewatch.py says how that is known, and when it cannot be). A reboot starts every unit
again before any run can gate it: answers by those processes until a run gated them are
counted apart, as the reboot's. For restart and symlink-swap the new process serves during
its own gate by design; the figure says how much.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

from benchmarks.chaos.gatewatch import GATED, UNCERTAIN, UNGATED, GateHistory
from benchmarks.chaos.plan import Desired
from benchmarks.chaos.soak import IterationRecord, StrategyResult
from benchmarks.chaos.traffic import Sample

BLUE_GREEN_ITERATIONS = 500  # the count for blue-green


@dataclass
class FailingAttempt:
    iteration: int
    desired: str
    kind: str  # a key of FAILING_KINDS
    undisturbed: bool  # no disturbance in its iteration: what users see, and nothing else
    tried: bool  # False: refused as quarantined, nothing started
    answers: int  # answers by processes that never passed a gate, during the iteration
    failed: int  # failed requests during the iteration (not those of a disturbance's outage)


FAILING_KINDS = {
    "gate": "a release that fails its gate (its health path answers 500, its API 200)",
    "crash": "a release that crashes 1 s after it starts listening",
    "config": "a configuration that keeps a good release from starting (a DATABASE_PATH it cannot make, "
    "an option it refuses)",
}


def failing_kind(desired: Desired) -> str:
    if desired.config != "good":
        return "config"
    return "crash" if "crash" in desired.version else "gate"


@dataclass
class Goal:
    what: str
    measured: str
    met: bool | None  # None: not assessed in this run (said why in `measured`)


@dataclass
class Figures:
    strategy: str
    iterations: int
    requested: int
    stopped_early: str
    seconds: float
    requests: int = 0
    failed: int = 0
    failed_outage: Counter[str] = field(default_factory=Counter)  # by the disturbance that caused it
    failed_counted: int = 0
    failed_near: Counter[str] = field(default_factory=Counter)  # counted failures by what happened then
    failed_examples: list[str] = field(default_factory=list)
    failed_kinds: Counter[str] = field(default_factory=Counter)
    answers: int = 0  # answers that named the process
    gated: int = 0
    ungated: int = 0
    uncertain: int = 0
    uncertain_reboot: int = 0  # undecided answers by processes systemd started at a reboot
    ungated_reboot: int = 0  # by processes systemd started at a reboot, before a run gated them
    ungated_in_iterations: int = 0  # while an iteration's runs were going on
    ungated_never_gated: int = 0  # by processes that never passed a gate (a failing configuration)
    ungated_examples: list[str] = field(default_factory=list)
    ungated_by: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (where, version, process)
    checks: int = 0  # completed runs checked
    not_gated: list[str] = field(default_factory=list)  # iterations whose check failed, with why
    no_completed_run: list[str] = field(default_factory=list)
    failed_runs_undisturbed: list[str] = field(default_factory=list)
    acknowledged: int = 0
    lost: list[str] = field(default_factory=list)
    lost_ids: set[int] = field(default_factory=set)  # every acknowledged row found missing
    rows_in_database: int = 0
    attempts: list[FailingAttempt] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)  # the last run's result per iteration
    disturbances: Counter[str] = field(default_factory=Counter)
    disturbance_outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    poll_gap: float = 0.0
    polls: int = 0
    failed_polls: int = 0
    setup_error: str = ""

    @property
    def failed_share(self) -> float:
        return self.failed / self.requests if self.requests else 0.0


def outage_windows(records: list[IterationRecord]) -> list[tuple[float, float, str]]:
    windows = []
    for r in records:
        for d in r.done:
            if d.outage is None:
                continue
            start, end = d.outage
            if d.outage_until_run:
                end = max(end, r.end)
            windows.append((start, end, d.kind))
    return windows


def _overlaps(s: Sample, window: tuple[float, float, str]) -> bool:
    return s.sent <= window[1] and s.done >= window[0]


def _within(s: Sample, records: list[IterationRecord], starts: list[float]) -> IterationRecord | None:
    i = bisect.bisect_right(starts, s.sent) - 1
    if i >= 0 and records[i].start <= s.sent <= records[i].end:
        return records[i]
    return None


def events(records: list[IterationRecord]) -> list[tuple[float, float, str]]:
    """What happened when: every action of every run (from its log) and every disturbance."""
    out = []
    for r in records:
        for run in r.runs:
            out += [(start, end, f"{action} {_short(target)}") for start, end, action, target in run.steps]
        out += [(d.start, d.end, d.kind) for d in r.done]
    return sorted(out)


def _short(target: str) -> str:
    if "://" in target:
        return target.split("://", 1)[1]
    return target.rsplit("/", 1)[-1]


def nearest(s: Sample, happened: list[tuple[float, float, str]], slack: float = 1.0) -> str:
    """What happened while a request was out, or within `slack` seconds of it (at most three
    things, the last to start)."""
    found: list[str] = []
    for start, end, what in happened:
        if start > s.done + slack:
            break
        if end >= s.sent - slack and what not in found:
            found.append(what)
    return " + ".join(found[-3:]) or "nothing within 1 s"


def _outcome_kind(outcome: str) -> str:
    if outcome.startswith("could not"):
        return "could not be done"
    if outcome.startswith(("the agent died", "killed")):
        return "took effect"
    if "not reached" in outcome or "had ended" in outcome:
        return "too late: the run had ended"
    return "done"


def figures(result: StrategyResult) -> Figures:
    records = result.iterations
    f = Figures(
        result.strategy,
        len(records),
        result.requested,
        result.stopped_early,
        result.seconds,
        setup_error=result.setup_error,
        polls=result.polls,
        failed_polls=result.failed_polls,
        acknowledged=result.acknowledged,
        rows_in_database=result.rows_in_database,
    )
    history = result.history or GateHistory([])
    f.poll_gap = history.longest_gap()
    windows = outage_windows(records)
    booted = set().union(*(d.booted for r in records for d in r.done)) if records else set()
    ever = history.ever_gated()
    samples = sorted(result.samples, key=lambda s: s.sent)
    happened = events(records)
    sent = [s.sent for s in samples]
    starts = [r.start for r in records]
    f.requests = len(samples)
    excused: set[int] = set()  # failed samples (by id) inside an outage a disturbance caused
    for s in samples:
        if s.failed:
            f.failed += 1
            f.failed_kinds[s.error.split(":")[0] if s.error else f"HTTP {s.status}"] += 1
            cause = next((w[2] for w in windows if _overlaps(s, w)), None)
            if cause:
                f.failed_outage[cause] += 1
                excused.add(id(s))
            else:
                f.failed_counted += 1
                near = nearest(s, happened)
                f.failed_near[" + ".join(sorted({part.split()[0] for part in near.split(" + ")}))] += 1
                if len(f.failed_examples) < 12:
                    within = _within(s, records, starts)
                    where = (
                        f"iteration #{within.index} ({within.desired.label})"
                        if within
                        else "between iterations"
                    )
                    f.failed_examples.append(
                        f"{s.kind}: {s.error or f'HTTP {s.status}'} during {where}, near {near}"
                    )
        if not s.invocation:
            continue
        f.answers += 1
        verdict = history.classify(s.invocation, s.sent, s.done)
        if verdict == GATED:
            f.gated += 1
        elif verdict == UNCERTAIN:
            f.uncertain += 1
            f.uncertain_reboot += s.invocation in booted
        elif verdict == UNGATED:
            f.ungated += 1
            if s.invocation in booted:
                f.ungated_reboot += 1
            within = _within(s, records, starts)
            if within is not None:
                f.ungated_in_iterations += 1
            if s.invocation not in ever:
                f.ungated_never_gated += 1
            if s.invocation not in booted:
                where = "between iterations"
                if within is not None:
                    where = f"iteration #{within.index} ({within.desired.label})"
                f.ungated_by[(where, s.version, s.invocation[:8])] += 1
    for r in records:
        for d in r.done:
            f.disturbances[d.kind] += 1
            f.disturbance_outcomes.setdefault(d.kind, Counter())[_outcome_kind(d.outcome)] += 1
        last = r.runs[-1] if r.runs else None
        f.outcomes[(last.result or f"exit {last.rc}") if last else "no run"] += 1
        if r.verdict is not None:
            f.checks += 1
            if not r.verdict.ok:
                f.not_gated.append(f"#{r.index}: {'; '.join(r.verdict.problems)} ({r.verdict.seen})")
        elif not r.completed:
            f.no_completed_run.append(f"#{r.index}: {'; '.join(run.describe() for run in r.runs)}")
        if not r.planned and r.runs and not r.runs[0].completed:
            f.failed_runs_undisturbed.append(f"#{r.index} {r.desired.label}: {r.runs[0].describe()}")
        if r.rows_lost:
            f.lost_ids.update(i for i, _ in r.rows_lost)
            f.lost.append(f"#{r.index}: {len(r.rows_lost)} rows, ids {[i for i, _ in r.rows_lost[:10]]}")
        if r.desired.failing:
            inside = samples[bisect.bisect_left(sent, r.start) : bisect.bisect_right(sent, r.end)]
            answers = sum(
                1
                for s in inside
                if s.invocation
                and s.invocation not in ever
                and s.invocation not in booted
                and (r.desired.config != "good" or s.version == r.desired.version)
            )
            tried = not all(run.result == "quarantined" for run in r.runs)
            f.attempts.append(
                FailingAttempt(
                    r.index,
                    r.desired.label,
                    failing_kind(r.desired),
                    not r.planned,
                    tried,
                    answers,
                    sum(s.failed and id(s) not in excused for s in inside),
                )
            )
    f.ungated_examples = [
        f"{n} answers by {version} process {process} during {where}"
        for (where, version, process), n in sorted(f.ungated_by.items(), key=lambda kv: -kv[1])[:12]
    ]
    if result.lost_at_end:
        f.lost_ids.update(i for i, _ in result.lost_at_end)
        f.lost.append(
            f"at the end: {len(result.lost_at_end)} of {result.acknowledged} acknowledged rows, "
            f"ids {[i for i, _ in result.lost_at_end[:10]]}"
        )
    return f


def goals(figs: list[Figures]) -> list[Goal]:
    out: list[Goal] = []
    for f in figs:
        if f.strategy == "blue-green":
            ungated = f.ungated - f.ungated_reboot
            undecided = f.uncertain - f.uncertain_reboot
            reboot = f.ungated_reboot + f.uncertain_reboot
            out.append(
                Goal(
                    "blue-green: no request answered by a process without a gate record",
                    f"{ungated} ungated, {undecided} undecided (within one poll of a record), of "
                    f"{f.answers:,} answers"
                    + (f"; {reboot} more after reboots, before a run gated the process" if reboot else ""),
                    ungated == 0 and undecided == 0,
                )
            )
            outage = sum(f.failed_outage.values())
            out.append(
                Goal(
                    "blue-green: no failed request",
                    f"{f.failed_counted} of {f.requests:,}"
                    + (f"; {outage} more during outages the disturbances caused" if outage else ""),
                    f.failed_counted == 0,
                )
            )
            if f.requested >= BLUE_GREEN_ITERATIONS:
                out.append(
                    Goal(
                        f"blue-green: at least {BLUE_GREEN_ITERATIONS} iterations",
                        f"{f.iterations}",
                        f.iterations >= BLUE_GREEN_ITERATIONS,
                    )
                )
            else:
                out.append(
                    Goal(
                        f"blue-green: at least {BLUE_GREEN_ITERATIONS} iterations",
                        f"not assessed: {f.requested} asked for",
                        None,
                    )
                )
        bad = len(f.not_gated) + len(f.no_completed_run)
        unfinished = f"; {len(f.no_completed_run)} iterations without a completed run"
        out.append(
            Goal(
                f"{f.strategy}: every completed run ends with a gated state serving",
                f"{f.checks - len(f.not_gated)} of {f.checks} checks"
                + (unfinished if f.no_completed_run else ""),
                bad == 0 and f.checks > 0,
            )
        )
        out.append(
            Goal(
                f"{f.strategy}: no acknowledged row lost",
                f"{len(f.lost_ids)} lost of {f.acknowledged:,} acknowledged"
                + (f"; {f.setup_error}" if f.setup_error else ""),
                not f.lost and f.acknowledged > 0 and not f.setup_error,
            )
        )
    return out
