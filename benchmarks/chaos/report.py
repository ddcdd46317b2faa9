"""benchmarks/chaos.md, the soak's section of benchmarks/RESULTS.md, and the raw records."""

from __future__ import annotations

import csv
import gzip
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from benchmarks.chaos.analysis import FAILING_KINDS, Figures, Goal
from benchmarks.chaos.plan import CONFIGS, DISTURBANCES, FAILING_RELEASES, GOOD_RELEASES
from benchmarks.chaos.soak import WALL, Settings, StrategyResult

RESULTS_HEADING = "### Chaos soak on a real host (from chaos.md)"
RESULTS_BULLET = (
    "- [chaos.md](chaos.md): deploys under load while the controller and the agent are killed, Caddy "
    "is restarted and reloaded by others, the host reboots and files are edited by hand: requests "
    "answered by a process without a gate record, failed requests, runs that ended without a gated "
    "state serving, rows lost (`python -m benchmarks.chaos`)."
)


@dataclass
class Run:
    command: str
    seed: int
    started: str
    finished: str
    machine: list[str]
    settings: Settings
    figures: list[Figures]
    goals: list[Goal]
    setup_errors: list[str]


def _n(value: int) -> str:
    return f"{value:,}"


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.2%}" if whole else "–"


def _mark(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not assessed"}[met]


def goal_table(goals: list[Goal]) -> list[str]:
    return [
        "| goal | measured | |",
        "|---|---|---|",
        *(f"| {g.what} | {g.measured} | {_mark(g.met)} |" for g in goals),
    ]


def strategy_table(figs: list[Figures]) -> list[str]:
    lines = [
        "| strategy | iterations | requests | failed | of them during outages a disturbance caused | "
        "answers by an ungated process | of them after a reboot, before a run | undecided "
        "| completed runs checked | not serving a gated state | rows acknowledged | rows lost |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in figs:
        lines.append(
            f"| {f.strategy} | {f.iterations} | {_n(f.requests)} "
            f"| {_n(f.failed)} ({_share(f.failed, f.requests)}) "
            f"| {_n(sum(f.failed_outage.values()))} | {_n(f.ungated)} | {_n(f.ungated_reboot)} "
            f"| {_n(f.uncertain)}{f' ({f.uncertain_reboot} after a reboot)' if f.uncertain_reboot else ''} "
            f"| {f.checks} | {len(f.not_gated)} | {_n(f.acknowledged)} "
            f"| {len(f.lost_ids)} |"
        )
    return lines


def failing_table(figs: list[Figures]) -> list[str]:
    lines = [
        "| strategy | what failed | tries | refused as quarantined | undisturbed tries | answers by the "
        "failing process per undisturbed try: median / max | failed requests per undisturbed try: "
        "median / max | all tries: answers by the failing process | all tries: failed requests "
        "(not in a disturbance's outage) |",
        "|---|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for f in figs:
        for kind in FAILING_KINDS:
            mine = [a for a in f.attempts if a.kind == kind]
            if not mine:
                continue
            tried = [a for a in mine if a.tried]
            clean = [a for a in tried if a.undisturbed]
            lines.append(
                f"| {f.strategy} | {kind} | {len(tried)} | {len(mine) - len(tried)} | {len(clean)} "
                f"| {_spread([a.answers for a in clean])} | {_spread([a.failed for a in clean])} "
                f"| {_n(sum(a.answers for a in tried))} | {_n(sum(a.failed for a in tried))} |"
            )
    return lines


def _spread(values: list[int]) -> str:
    return f"{statistics.median(values):g} / {max(values)}" if values else "–"


def _per_strategy(f: Figures) -> list[str]:
    lines = [f"### {f.strategy}", ""]
    if f.stopped_early:
        lines += [f"Stopped early: {f.stopped_early} (of {f.requested} asked for).", ""]
    lines += [
        f"{f.iterations} iterations in {f.seconds / 60:.0f} min; gates.json read {_n(f.polls)} times "
        f"({f.failed_polls} reads failed, while the host rebooted); the longest time between two "
        f"reads was {f.poll_gap * 1000:.0f} ms.",
        "",
        "How each iteration's last run ended: "
        + ", ".join(f"{k} {v}" for k, v in sorted(f.outcomes.items(), key=lambda kv: -kv[1]))
        + ".",
        "",
        "| disturbance | times | outcomes |",
        "|---|---:|---|",
    ]
    for kind in DISTURBANCES:
        if f.disturbances[kind]:
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(f.disturbance_outcomes[kind].items()))
            lines.append(f"| {kind} | {f.disturbances[kind]} | {outcomes} |")
    lines.append("")
    if f.failed:
        kinds = ", ".join(f"{k} {v}" for k, v in f.failed_kinds.most_common())
        outage = ", ".join(f"{k} {v}" for k, v in f.failed_outage.most_common()) or "none"
        lines += [f"Failed requests by kind: {kinds}. During outages, by the disturbance: {outage}.", ""]
    if f.failed_counted:
        near = ", ".join(f"{k} {v}" for k, v in f.failed_near.most_common())
        lines += [
            f"The other failed requests, by what happened within 1 s of them: {near}.",
            "",
            *(f"- {e}" for e in f.failed_examples),
            "",
        ]
    if f.ungated:
        lines += [
            f"Answers by an ungated process: {_n(f.ungated)}; {_n(f.ungated_in_iterations)} while an "
            f"iteration's runs went on, {_n(f.ungated_never_gated)} by a process that never passed a gate, "
            f"{_n(f.ungated_reboot)} by a process systemd started at a reboot, before a run gated it.",
            "",
        ]
        if f.ungated_examples:
            lines += [
                "The processes that answered most while ungated (not after a reboot):",
                "",
                *(f"- {e}" for e in f.ungated_examples),
                "",
            ]
    findings = [
        *(f"- not serving a gated state after {x}" for x in f.not_gated),
        *(f"- no run completed in {x}" for x in f.no_completed_run),
        *(f"- rows lost {x}" for x in f.lost),
        *(f"- a run failed with no disturbance: {x}" for x in f.failed_runs_undisturbed),
    ]
    if f.setup_error:
        findings.insert(0, f"- {f.setup_error}")
    lines += ["Findings:", "", *(findings or ["- none"]), ""]
    return lines


def render(run: Run) -> str:
    s = run.settings
    lines = [
        "# Chaos soak on a real host",
        "",
        "Deploys under steady load on one test host (systemd, sshd, Caddy), while the host is "
        "disturbed the way real hosts are. Per strategy, each iteration picks at random a desired "
        f"state (good releases {', '.join(GOOD_RELEASES)}; "
        + "; ".join(f"{k}: {v}" for k, v in FAILING_RELEASES.items())
        + "; a good release with a configuration that breaks it: "
        + "; ".join(f"{k}: {v}" for k, v in CONFIGS.items() if k != "good")
        + "; a new `CHAOS_SALT` in the env now and then, so a configuration that failed is not the "
        "only one of its kind) and up to two disturbances: "
        + "; ".join(f"{k}: {v}" for k, v in DISTURBANCES.items())
        + ". Then `reconcile --once --lock-timeout` runs, again without disturbances until a run "
        "completes (exit 0 or 3), and what serves is checked: `reconcile status --json` (the release "
        "and the unit Caddy routes to), the answer through Caddy (which process, which release) and "
        "the host's gate records must agree. A second app on the same host (blue-green, its own "
        "site) is deployed now and then, which reloads Caddy.",
        "",
        f"Traffic: {s.rate:g} requests/s through Caddy from this machine, a new connection each: half "
        "`GET /api/version`, 3 in 10 `POST /api/notes` (a row in SQLite), 2 in 10 `GET /`. Every "
        "backend answer names its process (`X-Choiros-Invocation`, systemd's `$INVOCATION_ID`). "
        "`data.sqlite` is set with `restore_on_rollback: false`; every acknowledged row (201) is "
        "looked for in the database after each iteration and at the end.",
        "",
        "```",
        run.command,
        "```",
        "",
        f"Seed {run.seed}: the choices of every iteration follow from it (the host's timings do not). "
        f"Run {run.started} – {run.finished}.",
        "",
        "Machine:",
        "",
        *[f"- {line}" for line in run.machine],
        f"- health gate `{s.health.replace(chr(10), ', ')}` (passes 2); gates.json read every "
        f"{s.gate_poll * 1000:.0f} ms; `--lock-timeout {s.lock_timeout:g}`",
        "",
    ]
    if run.setup_errors:
        lines += [
            "**This run failed to set up** (no figures of it are given):",
            "",
            *(f"- {e}" for e in run.setup_errors),
            "",
        ]
    lines += [
        "## Summary",
        "",
        *goal_table(run.goals),
        "",
        *strategy_table(run.figures),
        "",
        "What users see when a release fails, per try of a failing state (a state that failed is "
        "quarantined, and refused when asked for again): "
        + "; ".join(f"{k}: {v}" for k, v in FAILING_KINDS.items())
        + ".",
        "",
        *failing_table(run.figures),
        "",
        "## How to read it",
        "",
        "- **Failed**: no answer within 10 s, or a status of 500 or more. A Caddy restart and a reboot "
        "take the site down by themselves, and so does Caddy pointed by hand at a port where nothing "
        "listens (until the next run puts the fragment back): failed requests that overlap those "
        "windows are counted apart; the blue-green goal is about the others.",
        "- **Ungated**: the process that answered had no record in gates.json. The file is polled; a "
        "record's presence is known at each read and changes between two reads. An answer counts as "
        "ungated only if the reads before its request and after its answer (and all between) saw no "
        "record of its process, as gated only if they all saw it; otherwise it is **undecided**, so "
        "neither figure is ever off because of the polling: an undecided answer came within one "
        "polling interval (plus the request's own time) of its process's record appearing or going. "
        "A reboot starts every unit before any run can gate it; answers by those processes until a "
        "run gated them are counted apart.",
        "- With `restart` and `symlink-swap` the new process serves during its own gate, by design: "
        "their ungated answers are that (and the rollback's restart). A failing process's answers "
        "are those by processes that never passed a gate, during the iteration that tried it.",
        "",
        "## Per strategy",
        "",
    ]
    for f in run.figures:
        lines += _per_strategy(f)
    return "\n".join(lines).rstrip() + "\n"


def results_section(report: Path) -> list[str]:
    """What RESULTS.md repeats of chaos.md: its summary's tables (as benchmarks.peers does for
    the other reports, so that a run of either writes the same)."""
    from benchmarks.peers.report import _section

    table = _section(report, "## Summary")
    return [RESULTS_HEADING, "", *table] if table else []


def update_results(results: Path, report: Path) -> None:
    """Put the soak's section into RESULTS.md, in place of the one there, or at the end."""
    section = results_section(report)
    if not section or not results.exists():
        return
    lines = results.read_text().splitlines()
    if RESULTS_BULLET not in lines and "## Other benchmarks" in lines:
        at = lines.index("## Other benchmarks") + 1
        while at < len(lines) and (not lines[at].strip() or lines[at].startswith("- ")):
            at += 1
        while not lines[at - 1].strip():
            at -= 1
        lines.insert(at, RESULTS_BULLET)
    if RESULTS_HEADING in lines:
        start = lines.index(RESULTS_HEADING)
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith(("## ", "### "))), len(lines)
        )
        while end > start and not lines[end - 1].strip():
            end -= 1
        lines[start:end] = section
    else:
        while lines and not lines[-1].strip():
            lines.pop()
        lines += ["", *section]
    results.write_text("\n".join(lines).rstrip() + "\n")


def write_raw(results: list[StrategyResult], folder: Path) -> None:
    """Every iteration (JSON lines) and every request (CSV), per strategy, to look into a finding."""
    folder.mkdir(parents=True, exist_ok=True)
    for r in results:
        t0 = min((s.sent for s in r.samples), default=0.0)
        with (folder / f"{r.strategy}-iterations.jsonl").open("w") as out:
            for it in r.iterations:
                out.write(
                    json.dumps(
                        {
                            "iteration": it.index,
                            "desired": it.desired.label,
                            "planned": it.planned,
                            "start": round(it.start - t0, 3),
                            "end": round(it.end - t0, 3),
                            "done": [
                                {
                                    "what": d.describe(),
                                    "start": round(d.start - t0, 3),
                                    "end": round(d.end - t0, 3),
                                }
                                for d in it.done
                            ],
                            "runs": [
                                {
                                    "what": run.describe(),
                                    "start": round(run.start - t0, 3),
                                    "end": round(run.end - t0, 3),
                                    "tail": run.tail,
                                    "steps": [
                                        (round(a - t0, 3), round(b - t0, 3), what, target)
                                        for a, b, what, target in run.steps
                                    ],
                                }
                                for run in it.runs
                            ],
                            "verdict": None if it.verdict is None else vars(it.verdict),
                            "rows_lost": it.rows_lost,
                            "problems": it.problems,
                        }
                    )
                    + "\n"
                )
        with gzip.open(folder / f"{r.strategy}-requests.csv.gz", "wt", newline="") as raw:
            writer = csv.writer(raw)
            writer.writerow(["sent", "done", "kind", "status", "error", "invocation", "version", "note_id"])
            for s in sorted(r.samples, key=lambda s: s.sent):
                writer.writerow(
                    [
                        round(s.sent - t0, 4),
                        round(s.done - t0, 4),
                        s.kind,
                        s.status,
                        s.error or "",
                        s.invocation,
                        s.version,
                        s.note[0] if s.note else "",
                    ]
                )
        (folder / f"{r.strategy}-caddy.log").write_text(r.caddy_journal)
        (folder / f"{r.strategy}-clock.txt").write_text(
            f"times in these files are seconds after {t0 + WALL:.3f} (Unix time)\n"
        )
        if r.history is not None:
            with (folder / f"{r.strategy}-gates.jsonl").open("w") as out:
                for seg in r.history.segments:
                    out.write(
                        json.dumps(
                            {
                                "seen": None if seg.seen is None else sorted(seg.seen),
                                "first": [round(seg.first_start - t0, 4), round(seg.first_end - t0, 4)],
                                "last": [round(seg.last_start - t0, 4), round(seg.last_end - t0, 4)],
                                "polls": seg.polls,
                            }
                        )
                        + "\n"
                    )
