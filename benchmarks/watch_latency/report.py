"""Markdown for benchmarks/watch.md."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.deploy_load.stats import percentile
from benchmarks.watch_latency.noop import CliNoop, InProcess, median
from benchmarks.watch_latency.trials import Trial

# How to read the numbers: kept next to the code and appended to every report.
NOTES = Path(__file__).with_name("NOTES.md")


def _s(values: list[float | None]) -> str:
    """median (min-max) in seconds; a miss (never seen) is reported, not dropped."""
    seen = [v for v in values if v is not None]
    if not seen:
        return "never"
    text = f"{median(seen):.2f} s ({min(seen):.2f}-{max(seen):.2f})"
    missed = len(values) - len(seen)
    return text + (f", {missed} never" if missed else "")


def _ms(values: list[float]) -> str:
    """median / p95 / max in milliseconds."""
    if not values:
        return "-"
    return f"{median(values):.1f} / {percentile(values, 0.95):.1f} / {max(values):.1f} ms"


def trials_table(trials: list[Trial]) -> list[str]:
    lines = [
        "| strategy | trials | save -> `plan` logged | save -> `current` switched | save -> API new "
        "| save -> page new (site serves it) | save -> `converged` | observe in the pass |",
        "|---|---:|---|---|---|---|---|---|",
    ]
    for strategy in dict.fromkeys(t.strategy for t in trials):
        mine = [t for t in trials if t.strategy == strategy]
        lines.append(
            f"| {strategy} | {len(mine)} | {_s([t.plan_s for t in mine])} | {_s([t.link_s for t in mine])} "
            f"| {_s([t.api_s for t in mine])} | {_s([t.page_s for t in mine])} "
            f"| {_s([t.converged_s for t in mine])} | {median([t.observe_ms for t in mine]):.0f} ms |"
        )
    return lines


def _opt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def trial_rows(trials: list[Trial]) -> list[str]:
    lines = [
        "| strategy | to | plan | current | API | page | converged | actions |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for t in trials:
        lines.append(
            f"| {t.strategy} | {t.version} | {t.plan_s:.3f} | {_opt(t.link_s)} | {_opt(t.api_s)} "
            f"| {_opt(t.page_s)} | {t.converged_s:.3f} | {', '.join(t.actions)} |"
        )
    return lines


def _linger_lines(inproc: InProcess) -> list[str]:
    lg = inproc.linger
    if lg is None:
        return []
    after = ", ".join(f"{ms:,.0f} ms" for ms in lg.after_answer_ms)
    statuses = ", ".join("none (killed by a signal)" if s == -1 else str(s) for s in lg.exit_status)
    text = f"After answering, the agent process stays alive for {after} (exit status: {statuses})" + (
        f"; its stderr: `{lg.stderr}`." if lg.stderr else "."
    )
    if lg.after_answer_ms and min(lg.after_answer_ms) > 500:
        text += (
            " sshd keeps each such session open until the process exits, and allows 10 per"
            " connection (MaxSessions): more than ~10 requests within a second on one held"
            " connection are refused (`ChannelException(2, 'Connect failed')`, sshd: `no more"
            " sessions`). The in-process passes above are therefore spaced 0.25 s apart."
        )
    return [text]


def noop_table(cli: CliNoop, inproc: InProcess) -> list[str]:
    per_pass = cli.channels / cli.passes if cli.passes else math.nan
    periods = [p * 1000 for p in cli.period_s]
    return [
        "| what | median / p95 / max | n |",
        "|---|---|---:|",
        f"| CLI watch, `--interval {cli.interval:g}`: observe round trip logged by each pass "
        f"| {_ms(cli.observe_ms)} | {cli.passes} |",
        f"| CLI watch: time between passes (interval x jitter 0.9-1.1 + the pass) | {_ms(periods)} "
        f"| {len(periods)} |",
        f"| in-process `Watcher.run_pass`, whole no-op pass | {_ms(inproc.pass_ms)} | {inproc.passes} |",
        f"| - of which `reconcile_once` (observe round trip + plan) | {_ms(inproc.once_ms)} "
        f"| {inproc.passes} |",
        f"| - of which loading and checking the file | {_ms(inproc.load_ms)} | {inproc.passes} |",
        f"| - of which `git rev-parse` + `git status` (the commit for the log) | {_ms(inproc.git_ms)} "
        f"| {inproc.passes} |",
        f"| floor: exec `true` on the held connection | {_ms(inproc.exec_true_ms)} | {inproc.passes} |",
        f"| floor: exec `python3 -c pass` on the held connection | {_ms(inproc.exec_python_ms)} "
        f"| {inproc.passes} |",
        "| inside the host, no SSH: a fresh `python3` loads the agent and observes, start to exit "
        f"| {_ms(inproc.agent_process_ms)} | {len(inproc.agent_process_ms)} |",
        "| - of which loading the agent (decompress, compile, its imports) "
        f"| {_ms(inproc.agent_load_ms)} | {len(inproc.agent_load_ms)} |",
        f"| - of which its `observe()` | {_ms(inproc.agent_observe_ms)} | {len(inproc.agent_observe_ms)} |",
        "",
        *_linger_lines(inproc),
        "",
        f"sshd on the host (LogLevel DEBUG1) during the CLI run: **{cli.channels} exec channels for "
        f"{cli.passes} passes = {per_pass:.2f} per no-op pass**, over {cli.connections} SSH "
        f"connection(s); {cli.changed} of the passes planned anything.",
    ]


def render(
    trials: list[Trial], cli: CliNoop, inproc: InProcess, machine: list[str], command: str, health: str
) -> str:
    lines = [
        "# Watch mode latency",
        "",
        "`reconcile --watch` against a test host over SSH. (a) Each trial saves desired-state.yaml",
        "as editors do (a new file renamed over the old one), alternating 2.0.0 and 1.0.0, and times",
        "on this machine's clock when the `plan` log line arrives (observed and planned: the first",
        "action starts now), when the host's `current` symlink names the new release (read through",
        "the container's /proc/<pid>/root, no exec), when `GET /api/version` and `GET /` through Caddy",
        "answer the new version, and when `converged` arrives. symlink-swap restarts the backend and",
        "waits for its health gate; blue-green runs with both colours warm, so every trial is the",
        "documented switch-only path. (b) The cost of a pass that finds nothing to do over the held",
        "connection.",
        "",
        "```",
        command,
        "```",
        "",
        "Machine:",
        "",
        *[f"- {line}" for line in machine],
        f"- health gate: `{health}`, otherwise the schema's defaults (2 passes spanning 1 s from one"
        " process); the watch's file debounce is watchfiles' (300 ms cap, 50 ms step)",
        "",
        "## (a) Saving the file to serving the new version",
        "",
        "median (min-max) over the trials, seconds after the rename:",
        "",
        *trials_table(trials),
        "",
        "## (b) A no-op pass over the held connection",
        "",
        *noop_table(cli, inproc),
        "",
        "## Every trial",
        "",
        "Seconds after the rename.",
        "",
        *trial_rows(trials),
    ]
    if NOTES.is_file():
        lines += ["", NOTES.read_text().strip()]
    return "\n".join(lines).rstrip() + "\n"
