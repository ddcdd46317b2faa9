"""What the user reads: a terraform-like plan with reasons, progress, and a --json object."""

from __future__ import annotations

import json
import sys
import threading
from typing import IO, TYPE_CHECKING, Any

from reconciler.executors.base import Event
from reconciler.observe.snapshot import Observed
from reconciler.plan.actions import Plan
from reconciler.spec.model import DesiredState, HostSpec

if TYPE_CHECKING:
    from reconciler.engine.fleet import FleetRun
    from reconciler.engine.once import Outcome

SYMBOLS = {
    "upload": "+",
    "write": "~",
    "validate+write": "~",
    "symlink": "~",
    "remove": "-",
    "stop": "-",
    "disable": "-",
    "quarantine": "!",
}


def _sym(label: str) -> str:
    return SYMBOLS.get(label, "*")


class HumanReporter:
    """Prints the plan as soon as it exists, then one line per finished action.

    With a prefix (a host's name in a fleet) every line carries it, and a plan is printed as
    one block, so hosts reporting at once do not interleave their plans."""

    def __init__(
        self, out: IO[str] | None = None, prefix: str = "", lock: threading.Lock | None = None
    ) -> None:
        self.out = out or sys.stdout
        self.last_progress = -1
        self.prefix = f"[{prefix}] " if prefix else ""
        self.lock = lock or threading.Lock()
        self.block: list[str] | None = None

    def print(self, text: str = "") -> None:
        line = f"{self.prefix}{text}"
        if self.block is not None:
            self.block.append(line)
            return
        with self.lock:
            print(line, file=self.out, flush=True)

    def planned(self, desired: DesiredState, plan: Plan, observed: Observed, ms: float) -> None:
        self.block = []
        try:
            self._plan_lines(desired, plan, observed, ms)
        finally:
            lines, self.block = self.block, None
            with self.lock:
                print("\n".join(lines), file=self.out, flush=True)

    def _plan_lines(self, desired: DesiredState, plan: Plan, observed: Observed, ms: float) -> None:
        self.print(
            f"{desired.app} {desired.release.version} ({desired.strategy}) on {observed.hostname}: "
            f"observed in {ms:.0f} ms"
        )
        if observed.lock_holder is not None:
            self.print(
                f"  note: another run holds the lock ({_holder(dict(observed.lock_holder))}); "
                "this plan may change when it finishes"
            )
        if observed.paused is not None:
            self.print(
                f"  note: the host is {observed.paused.describe()}; runs apply nothing until "
                "`reconcile resume` (or `reconcile --once --force`)"
            )
        if plan.held is not None:
            self.print(
                f"  note: the host is {plan.held}. Runs leave it there while the file names this "
                "configuration (`reconcile resume` ends the hold)"
            )
            if plan.actions:
                self.print("  the held state has drifted: putting it back")
        if plan.quarantined is not None:
            self.print(
                f"  {desired.release.version} with this configuration is quarantined: {plan.quarantined}"
            )
            if plan.actions:
                self.print("  the host is not in its last good state: restoring it")
        if not plan.actions:
            return
        self.print(f"Plan: {len(plan.actions)} action{'s' if len(plan.actions) != 1 else ''}")
        width = max(len(a.summary()["action"]) for a in plan.actions)
        for i, action in enumerate(plan.actions, 1):
            s = action.summary()
            self.print(f"  {i:>2}. {_sym(s['action'])} {s['action']:<{width}}  {s['target']}")
            self.print(f"      {' ' * width}    because {s['reason']}")

    def event(self, plan: Plan, event: Event) -> None:
        kind = event.get("event")
        if kind == "lock_wait":
            holder = event.get("holder") or {}
            self.print(f"  waiting for the host lock held by {_holder(holder)}")
        elif kind in ("action_done", "action_failed", "rollback_failed"):
            steps = plan.steps("rollback" if kind == "rollback_failed" else event.get("phase"))
            i = event["index"]
            if not 0 <= i < len(steps):
                return
            s = steps[i].summary()
            where = f"{i + 1}/{len(steps)} {s['action']} {s['target']}"
            if kind == "action_done":
                skipped = (event.get("result") or {}).get("skipped")
                self.print(f"  ok {where} ({skipped or _ms(event.get('ms'))})")
            else:
                self.print(f"  FAILED {where}: {event.get('error')}")
        elif kind == "rollback_start" and event.get("to"):
            self.print(f"  rolling back on the host to the last good state ({event['to']})")
        elif kind == "rollback_start":
            self.print("  nothing to roll back to: no earlier state of the app passed its gates on this host")
        elif kind == "idle_stopped":
            self.print(f"  stopped {event.get('unit')}: {event.get('why')}")
        elif kind == "progress" and event.get("total"):
            pct = int(100 * event["done"] / event["total"])
            if pct // 25 != self.last_progress // 25 or pct == 100:
                self.last_progress = pct
                self.print(f"     upload {pct:>3}% of {_size(event['total'])}")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def _ms(ms: Any) -> str:
    if not isinstance(ms, (int, float)):
        return "?"
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def _holder(holder: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in holder.items()) or "another run"


def serving_fields(desired: DesiredState, outcome: Outcome) -> dict[str, Any]:
    """What the host serves as last observed, and since when: in every --json result."""
    from reconciler.plan.planner import serving_release, serving_since

    observed = outcome.after or outcome.observed
    return {"serving": serving_release(desired, observed), "serving_since": serving_since(desired, observed)}


def json_result(
    *,
    desired: DesiredState | None,
    plan: Plan | None,
    result: str,
    host: str | None = None,
    error: str | None = None,
    applied: bool = False,
    timings: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    obj: dict[str, Any] = {
        "result": result,
        "changed": bool(plan and plan.changed),
        "applied": applied,
        "actions": plan.summaries() if plan else [],
    }
    if desired is not None:
        obj.update(
            app=desired.app,
            version=desired.release.version,
            strategy=desired.strategy,
            target=str(desired.target),
        )
    if host:
        obj["host"] = host
    if timings:
        obj["timings_ms"] = {k.removesuffix("_ms"): round(v, 1) for k, v in timings.items()}
    if error:
        obj["error"] = error
    if extra:
        obj.update(extra)
    return json.dumps(obj, indent=2)


class FleetHumanReporter:
    """One HumanReporter per host, all writing through one lock."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        self.lock = threading.Lock()

    def for_host(self, host: HostSpec) -> HumanReporter:
        return HumanReporter(self.out, prefix=host.name, lock=self.lock)

    def batch(self, number: int, total: int, names: list[str]) -> None:
        with self.lock:
            print(f"-- batch {number}/{total}: {', '.join(names)}", file=self.out, flush=True)


def fleet_summary(fleet: FleetRun) -> str:
    width = max(len(r.host.name) for r in fleet.runs)
    lines = ["Summary:"]
    for r in fleet.runs:
        serving = f"serves {r.serving}" if r.serving else "serves nothing we manage"
        if r.serving and r.serving_since:
            serving += f" since {r.serving_since}"
        elif r.outcome is None:
            serving = "not observed"
        line = f"  {r.host.name:<{width}}  {r.result:<15} {serving}"
        if r.error is not None:
            line += f"\n  {'':<{width}}  {str(r.error).splitlines()[0]}"
        lines.append(line)
    if fleet.stopped:
        lines.append("The rollout stopped: more hosts failed than rollout.max_failed allows.")
    return "\n".join(lines)


def fleet_json(desired: DesiredState, fleet: FleetRun, result: str) -> str:
    hosts: dict[str, Any] = {}
    for r in fleet.runs:
        entry: dict[str, Any] = {
            "target": str(r.host.target),
            "group": r.host.group,
            "result": r.result,
            "actions": r.outcome.plan.summaries() if r.outcome else [],
            "applied": bool(r.outcome and r.outcome.applied),
            "serving": r.serving,
            "serving_since": r.serving_since,
        }
        if r.error is not None:
            entry["error"] = str(r.error)
        hosts[r.host.name] = entry
    by_result: dict[str, list[str]] = {}
    for r in fleet.runs:
        by_result.setdefault(r.result, []).append(r.host.name)
    return json.dumps(
        {
            "result": result,
            "changed": any(r.outcome and r.outcome.plan.changed for r in fleet.runs),
            "app": desired.app,
            "version": desired.release.version,
            "strategy": desired.strategy,
            "hosts": hosts,
            "summary": by_result,
            "batches": fleet.batches,
            "stopped": fleet.stopped,
        },
        indent=2,
    )
