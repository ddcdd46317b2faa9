"""Watch mode talks through structured logs: plans that change something, and progress."""

from __future__ import annotations

from reconciler.executors.base import Event
from reconciler.log import log
from reconciler.observe.snapshot import Observed
from reconciler.plan.actions import Plan
from reconciler.spec.model import DesiredState, HostSpec


class LogReporter:
    def __init__(self, host: str | None = None) -> None:
        self.host = host

    def planned(self, desired: DesiredState, plan: Plan, observed: Observed, ms: float) -> None:
        if plan.changed:
            log.info(
                "plan",
                host=self.host or observed.hostname,
                version=desired.release.version,
                actions=plan.summaries(),
                observe_ms=round(ms, 1),
            )

    def event(self, plan: Plan, event: Event) -> None:
        kind = event.get("event")
        if kind == "action_start":
            steps = plan.steps(event.get("phase"))
            if not 0 <= event["index"] < len(steps):
                return
            action = steps[event["index"]]
            if action.summary()["action"] in ("upload", "health-check"):
                log.info("working", step=action.summary()["action"], target=action.target)
        elif kind == "rollback_start":
            log.warning("rolling back on the host", to=event.get("to"))
        elif kind == "idle_stopped":
            log.warning("idle colour stopped", unit=event.get("unit"), why=event.get("why"))
        elif kind == "progress" and event.get("total"):
            done, total = event["done"], event["total"]
            if done == total or int(4 * done / total) != int(4 * (done - 65536) / total):
                log.info("upload", done_bytes=done, total_bytes=total)
        elif kind == "lock_wait":
            log.info("waiting for host lock", holder=event.get("holder"))


class FleetLogReporter:
    def for_host(self, host: HostSpec) -> LogReporter:
        return LogReporter(host.name)

    def batch(self, number: int, total: int, names: list[str]) -> None:
        log.info("batch", number=number, of=total, hosts=names)
