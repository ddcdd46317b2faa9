"""Markdown for benchmarks/deploy-under-load.md, and raw data for a closer look."""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from pathlib import Path

from benchmarks.deploy_load.scenario import Change, Settings, StrategyResult
from benchmarks.deploy_load.stats import PhaseStats, Switch, Window, in_window, percentile

# How to read the numbers: the mechanisms behind them, kept next to the code, appended to
# every report (the numbers above it are generated; this text is not).
NOTES = Path(__file__).with_name("NOTES.md")

# Short names for plan lines, so a whole plan fits in a table cell.
_TARGET_SHORT = {"/opt/choiros/": "", "/etc/systemd/system/": "", "/etc/caddy/": "", "http://127.0.0.1": ""}


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def _failed(counter: Counter[str]) -> str:
    if not counter:
        return "0"
    kinds = ", ".join(f"{n} {kind}" for kind, n in counter.most_common())
    return f"**{sum(counter.values())}** ({kinds})"


def short_plan(actions: list[tuple[str, str]]) -> str:
    if not actions:
        return "(nothing to do)"
    return "; ".join(f"{action} {_short(target)}" for action, target in actions)


def _short(target: str) -> str:
    for prefix, repl in _TARGET_SHORT.items():
        target = target.replace(prefix, repl)
    return target


def _switch_text(switches: list[Switch]) -> str:
    parts = []
    for sw in switches:
        if sw.first_new_s is None:
            parts.append(f"`{sw.path}` never switched")
            continue
        text = f"`{sw.path}` at +{sw.first_new_s:.2f} s"
        if sw.old_after_new:
            text += f" (then {sw.old_after_new} old answers until +{sw.last_old_s:.2f} s)"
        parts.append(text)
    return "; ".join(parts)


def _phase(result: StrategyResult, name: str) -> PhaseStats:
    return next(p for p in result.phases if p.name == name)


def _groups(results: list[StrategyResult]) -> dict[tuple[str, bool], list[StrategyResult]]:
    groups: dict[tuple[str, bool], list[StrategyResult]] = {}
    for r in results:
        groups.setdefault((r.strategy, r.keepalive), []).append(r)
    return groups


def _mode(keepalive: bool) -> str:
    return "kept alive" if keepalive else "one per request"


def _took(changes: list[Change]) -> str:
    secs = sorted(c.seconds for c in changes)
    text = (
        f"{secs[0]:.2f} s"
        if len(secs) == 1
        else f"{statistics.median(secs):.2f} s ({secs[0]:.2f}-{secs[-1]:.2f})"
    )
    bad = [c.rc for c in changes if c.rc != 0]
    return text + (f", exit {bad}" if bad else "")


def _switch_range(runs: list[StrategyResult], name: str) -> str:
    if len(runs) == 1:
        return _switch_text(runs[0].switches[name])
    parts = []
    for i, path in enumerate(("/api/version", "/")):
        found = [r.switches[name][i] for r in runs]
        firsts = [sw.first_new_s for sw in found if sw.first_new_s is not None]
        text = f"`{path}` at +{min(firsts):.2f}-{max(firsts):.2f} s" if firsts else f"`{path}` never switched"
        if len(firsts) < len(found) and firsts:
            text += f" ({len(found) - len(firsts)} runs never)"
        stale = sum(sw.old_after_new for sw in found)
        if stale:
            text += f" (then {stale} old answers in all)"
        parts.append(text)
    return "; ".join(parts)


def summary_table(results: list[StrategyResult]) -> list[str]:
    """One row per strategy, connection mode and change; repeated runs are pooled (requests and
    failures summed, p99 over all their requests, worst over all)."""
    lines = [
        "| strategy | connections | change | runs | took | requests during it | failed | p99 | worst "
        "| served version switched |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for (strategy, keepalive), runs in _groups(results).items():
        for index, name in enumerate(("deploy", "rollback")):
            changes = [r.changes[index] for r in runs]
            latencies = [s.latency * 1000 for r in runs for s in in_window(r.samples, _window(r, name))]
            failed: Counter[str] = Counter()
            for r in runs:
                failed.update(_phase(r, name).failed)
            lines.append(
                f"| {strategy} | {_mode(keepalive)} | {name} to {changes[0].version} | {len(runs)} "
                f"| {_took(changes)} | {len(latencies)} | {_failed(failed)} "
                f"| {_ms(percentile(latencies, 0.99))} ms | {_ms(max(latencies, default=math.nan))} ms "
                f"| {_switch_range(runs, name)} |"
            )
    return lines


def _window(result: StrategyResult, name: str) -> Window:
    return next(w for w in result.windows if w.name == name)


SLOW_S = 0.5


def slow_section(results: list[StrategyResult]) -> list[str]:
    """Requests slower than SLOW_S, grouped per run and phase: where the stalls were."""
    rows = []
    for r in results:
        for w in r.windows:
            slow = [s for s in in_window(r.samples, w) if s.ok and s.latency > SLOW_S]
            if not slow:
                continue
            change = next((c for c in r.changes if c.name == w.name), None)
            origin = change.start if change else w.start
            first, last = min(s.due for s in slow) - origin, max(s.due for s in slow) - origin
            where = f"+{first:.2f} to +{last:.2f} s into the {w.name}"
            paths = ", ".join(f"`{p}`" for p in sorted({s.path for s in slow}))
            rows.append(
                f"| {r.strategy} | {_mode(r.keepalive)} | {r.run} | {len(slow)} | {paths} "
                f"| {max(s.latency for s in slow) * 1000:,.0f} ms | {where} |"
            )
    if not rows:
        return [f"No request took longer than {SLOW_S:g} s."]
    return [
        "| strategy | connections | run | requests | paths | worst | due |",
        "|---|---|---:|---:|---|---:|---|",
        *rows,
    ]


def failures_section(results: list[StrategyResult]) -> list[str]:
    """Every failed request, placed against the deploy or rollback it happened in and the
    moments its actions finished, to tell what caused it."""
    rows = []
    for r in results:
        for s in r.samples:
            if s.error is None:
                continue
            window = next((w for w in r.windows if w.start <= s.due < w.end), None)
            change = next((c for c in r.changes if window and c.name == window.name), None)
            when = (
                f"+{s.due - change.start:.3f} s into the {change.name}"
                if change
                else window.name
                if window
                else "?"
            )
            near = ""
            if change:
                at = s.due - change.start
                step = min(change.steps, key=lambda st: abs(st[0] - at), default=None)
                if step:
                    near = f"{step[1]} {step[2].rsplit('/', 1)[-1]} finished at +{step[0]:.3f} s"
            rows.append(
                f"| {r.strategy} | {_mode(r.keepalive)} | {r.run} | `{s.path}` | {s.error} "
                f"| {s.latency * 1000:,.0f} ms | {when} | {near} |"
            )
    if not rows:
        return ["No request failed in any run."]
    return [
        "| strategy | connections | run | path | failure | after | due | nearest action |",
        "|---|---|---:|---|---|---:|---|---|",
        *rows,
    ]


def _phase_table(result: StrategyResult) -> list[str]:
    lines = [
        "| phase | seconds | sent | failed | p50 | p99 | worst | generator lag (max) |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for p in result.phases:
        lines.append(
            f"| {p.name} | {p.seconds:.1f} | {p.sent} | {_failed(p.failed)} | {_ms(p.p50_ms)} ms | "
            f"{_ms(p.p99_ms)} ms | {_ms(p.max_ms)} ms | {_ms(p.max_lag_ms)} ms |"
        )
    return lines


def _change_lines(change: Change) -> list[str]:
    timings = ", ".join(f"{k} {v:,.0f}" for k, v in change.timings_ms.items())
    lines = [
        f"- **{change.name}** to {change.version}: {change.seconds:.2f} s wall "
        f"(CLI start to exit; {timings or 'no timings'}), exit {change.rc}, result `{change.result}`"
        + (f", error: {change.error}" if change.error else ""),
        f"  - plan: {short_plan(change.actions)}",
    ]
    if change.steps:
        steps = "; ".join(
            f"{action} {target.rsplit('/', 1)[-1]} {ms:,.0f} ms, done at +{at:.2f} s"
            for at, action, target, ms in change.steps
        )
        lines.append(f"  - steps: {steps}")
    return lines


def strategy_section(result: StrategyResult, runs: int) -> list[str]:
    mode = "kept-alive connections" if result.keepalive else "a new connection per request"
    which = f" (run {result.run} of {runs})" if runs > 1 else ""
    lines = [f"### {result.strategy}, {mode}{which}", "", f"{result.rate:g} requests/s.", ""]
    lines += _phase_table(result)
    lines.append("")
    for change in result.changes:
        lines += _change_lines(change)
    lines.append("")
    return lines


def write_raw(results: list[StrategyResult], folder: Path) -> None:
    """Every sample and the Caddy journal per strategy, for investigating a failure."""
    folder.mkdir(parents=True, exist_ok=True)
    for r in results:
        rows = [
            {
                "i": s.index,
                "path": s.path,
                "due": round(s.due - r.samples[0].due, 4),
                "lag_ms": round((s.sent - s.due) * 1000, 2),
                "latency_ms": round(s.latency * 1000, 2),
                "status": s.status,
                "version": s.version,
                "error": s.error,
                "reused": s.reused,
            }
            for s in r.samples
        ]
        changes = [
            {
                "name": c.name,
                "start": round(c.start - r.samples[0].due, 4),
                "end": round(c.end - r.samples[0].due, 4),
            }
            for c in r.changes
        ]
        data = {"strategy": r.strategy, "changes": changes, "samples": rows}
        name = f"{r.strategy}-{'keepalive' if r.keepalive else 'close'}-{r.run}"
        (folder / f"{name}.json").write_text(json.dumps(data))
        (folder / f"{name}-caddy.log").write_text(r.caddy_log)


def render(results: list[StrategyResult], settings: Settings, machine: list[str], command: str) -> str:
    lines = [
        "# Deploys under load",
        "",
        "What users see while a release is deployed and then rolled back, per strategy. An open-loop",
        f"generator sends {settings.rate:g} requests/s through Caddy on a test host (`GET /api/version`",
        "and `GET /` alternately, from this machine over the veth), once with a new TCP connection per",
        "request and once reusing kept-alive connections as browsers do. Requests leave on a",
        "fixed schedule even while earlier ones hang, and latency is measured from when a request was",
        "*due*, so a stall shows up as latency and is never hidden by a slower send rate. A few seconds",
        "into the stream `reconcile --once` deploys 2.0.0; a few seconds after it finished, it deploys",
        "1.0.0 again (the revert). Failed = not 200, connection refused/reset/closed early, or no answer",
        f"within {settings.request_timeout:g} s. Every answer's version is checked, to tell when the",
        "served version switched (seconds after the deploy or rollback started).",
        "",
        "```",
        command,
        "```",
        "",
        "Machine:",
        "",
        *[f"- {line}" for line in machine],
        f"- health gate: `{settings.health}`, otherwise the schema's defaults (2 passes spanning 1 s"
        " from one process, expect_version); Caddy: `lb_try_duration 5s`, `lb_try_interval 100ms`",
        "",
        "## Summary",
        "",
        *summary_table(results),
        "",
        "## Failed requests",
        "",
        *failures_section(results),
        "",
        f"## Requests slower than {SLOW_S:g} s",
        "",
        *slow_section(results),
        "",
        "## Per strategy",
        "",
    ]
    for runs in _groups(results).values():
        lines += strategy_section(runs[0], len(runs))
    if NOTES.is_file():
        lines += ["", NOTES.read_text().strip()]
    return "\n".join(lines).rstrip() + "\n"
