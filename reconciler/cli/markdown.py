"""`--format markdown`: the plan as a pull request comment. What each action does and why,
and the unified diff of every file it would write. Environment files are diffed with their
secrets masked: a secret's line says `(secret, changed)` when its value changes and its value
never appears; a value on the host is shown only where it equals what the desired state
shows in clear anyway (so a secret that was made public later is not printed either)."""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from reconciler.cli.output import SYMBOLS
from reconciler.observe.snapshot import Observed
from reconciler.plan.actions import Plan, WriteCaddyfile, WriteFile
from reconciler.render import envfile
from reconciler.spec.model import DesiredState

if TYPE_CHECKING:
    from reconciler.engine.fleet import FleetRun, HostRun
    from reconciler.engine.once import Outcome

MAX_DIFF_LINES = 300
MAX_CHARS = 60_000  # GitHub refuses comments over 65,536 characters

HEADLINES = {
    "changes_pending": "changes pending",
    "noop": "nothing to change",
    "converged": "converged",
    "rolled_back": "failed and rolled back",
    "quarantined": "quarantined: not deployed",
    "failed": "failed",
    "paused": "paused: nothing applied",
    "held": "held by `reconcile rollback`: not deployed",
    "invalid": "the desired state is invalid",
    "not_reached": "not reached",
    "stopped": "rollout stopped",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def plan_markdown(
    desired: DesiredState,
    outcome: Outcome | None,
    result: str,
    *,
    dry_run: bool,
    host: str | None = None,
    error: str | None = None,
    level: str = "###",
) -> str:
    from reconciler.plan.planner import serving_release, serving_since

    where = host or (outcome.observed.hostname if outcome else str(desired.target))
    lines = [
        f"{level} {desired.app} {desired.release.version} on {where}: {HEADLINES.get(result, result)}",
        "",
    ]
    facts = [f"strategy {desired.strategy}", f"target {_code(str(desired.target))}"]
    if outcome is not None:
        observed = outcome.after or outcome.observed
        serving = serving_release(desired, observed)
        since = serving_since(desired, observed)
        facts.append(f"serving {serving or 'nothing'}" + (f" since {since}" if since else ""))
    lines += [" · ".join(facts), ""]
    if error:
        lines += ["```", error.strip(), "```", ""]
    if outcome is None:
        return "\n".join(lines)
    plan, observed = outcome.plan, outcome.observed
    if observed.paused is not None:
        note = f"the host is {observed.paused.describe()}. Runs apply nothing until `reconcile resume`."
        lines += [f"> **Paused**: {note}", ""]
    if plan.quarantined is not None:
        note = f"{desired.release.version} with this configuration failed before: {plan.quarantined}"
        lines += [f"> **Quarantined**: {note}", ""]
    if plan.held is not None:
        note = (
            f"the host is {plan.held}. This file names the configuration the hold was made for: "
            "nothing deploys until `reconcile resume` or a change to the configuration."
        )
        lines += [f"> **Held**: {note}", ""]
    if not plan.actions:
        lines += ["No changes: the host matches the desired state.", ""]
        return "\n".join(lines)
    verb = "would run" if dry_run else "ran"
    lines += [
        f"**{len(plan.actions)} actions** {verb}:",
        "",
        "| # | action | target | because |",
        "|--:|---|---|---|",
    ]
    for i, action in enumerate(plan.actions, 1):
        s = action.summary()
        label = f"{SYMBOLS.get(s['action'], '*')} {s['action']}"
        lines.append(f"| {i} | {_code(label)} | {_code(_cell(s['target']))} | {_cell(s['reason'])} |")
    lines.append("")
    lines += _diffs(desired, plan, observed)
    return "\n".join(lines)


def _diffs(desired: DesiredState, plan: Plan, observed: Observed) -> list[str]:
    out: list[str] = []
    for action in plan.actions:
        if not isinstance(action, (WriteFile, WriteCaddyfile)):
            continue
        old = observed.content(action.path)
        new = action.content or ""  # a Caddy file the plan removes: diffed against nothing
        if isinstance(action, WriteFile) and action.secret:
            old, new = masked_env(old, new, desired)
        diff = list(
            difflib.unified_diff(
                (old or "").splitlines(),
                new.splitlines(),
                f"{action.path} (on the host)" if old is not None else "/dev/null",
                f"{action.path} (desired)",
                lineterm="",
            )
        )
        if not diff:
            continue
        if len(diff) > MAX_DIFF_LINES:
            diff = [*diff[:MAX_DIFF_LINES], f"... {len(diff) - MAX_DIFF_LINES} more lines"]
        summary = f"diff of <code>{action.path}</code>"
        out += [f"<details><summary>{summary}</summary>", "", "```diff", *diff, "```", "", "</details>", ""]
    return out


def masked_env(old: str | None, new: str, desired: DesiredState) -> tuple[str | None, str]:
    """Both sides of an environment file with every value hidden that is not public."""
    public = {v.name: v.value for v in desired.env if not v.secret}
    secret = {v.name for v in desired.env if v.secret}
    old_values = envfile.parse(old) if old is not None else {}
    new_values = envfile.parse(new)

    def mask(text: str, values: dict[str, str], side: str) -> str:
        lines = []
        for line in text.splitlines():
            name = line.partition("=")[0].strip()
            if "=" not in line or line.lstrip().startswith(("#", ";")) or name == envfile.CONFIG_VAR:
                lines.append(line)
            elif name in public and values.get(name) == public[name]:
                lines.append(line)  # the same text the desired state shows in git
            elif name in secret:
                changed = side == "new" and old_values.get(name) != new_values.get(name)
                lines.append(f"{name}=(secret{', changed' if changed else ''})")
            else:
                lines.append(f"{name}=(value on the host not shown)")
        return "\n".join(lines) + "\n"

    return (None if old is None else mask(old, old_values, "old")), mask(new, new_values, "new")


def fleet_markdown(desired: DesiredState, run: FleetRun, result: str, *, dry_run: bool) -> str:
    headline = HEADLINES.get(result, result)
    lines = [
        f"## {desired.app} {desired.release.version} on {len(run.runs)} hosts: {headline}",
        "",
        "| host | result | serving | actions |",
        "|---|---|---|--:|",
    ]
    for r in run.runs:
        serving = (r.serving or "nothing") + (f" since {r.serving_since}" if r.serving_since else "")
        n = len(r.outcome.plan.actions) if r.outcome else 0
        lines.append(f"| {r.host.name} | {r.result} | {serving} | {n} |")
    lines.append("")
    for r in run.runs:
        lines.append(_host_section(r, dry_run))
    if run.stopped:
        lines.append("The rollout stopped: more hosts failed than rollout.max_failed allows.")
    return _bounded("\n".join(lines))


def _host_section(r: HostRun, dry_run: bool) -> str:
    error = str(r.error) if r.error is not None else None
    return plan_markdown(r.desired, r.outcome, r.result, dry_run=dry_run, host=r.host.name, error=error)


def _bounded(text: str) -> str:
    if len(text) <= MAX_CHARS:
        return text
    cut = text[:MAX_CHARS].rsplit("\n", 1)[0]
    if cut.count("```") % 2:
        cut += "\n```"
    return (
        cut
        + "\n\n_(cut: the whole plan is longer than a comment may be; run `reconcile --once --dry-run`)_\n"
    )


def once_markdown(
    desired: DesiredState, outcome: Outcome | None, result: str, *, dry_run: bool, error: str | None = None
) -> str:
    return _bounded(plan_markdown(desired, outcome, result, dry_run=dry_run, error=error, level="##"))


def error_markdown(file: str, result: str, error: str) -> str:
    """Before a desired state exists (the file is invalid): what is wrong, as reported."""
    return _bounded(f"## {file}: {HEADLINES.get(result, result)}\n\n```\n{error.strip()}\n```\n")
