"""Several hosts: observe and plan them all in parallel, then roll out in health-gated batches.

Every host is reconciled exactly as a single host would be (same plan, same gates, same
rollback); this module only decides which hosts go when. Hosts with nothing to do are never
touched. A batch must pass before the next starts; once more hosts failed than
rollout.max_failed allows, the rollout stops and the hosts not reached keep their release.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from reconciler.engine.once import Outcome, Reporter, RunOptions, SilentReporter, converge, plan_host
from reconciler.engine.report import (  # the per-host results, in the words --json uses
    CONVERGED,
    FAILED,
    HELD,
    NOOP,
    PAUSED,
    PENDING,
    QUARANTINED,
    ROLLED_BACK,
    SKIPPED,
    HostReport,
    host_report,
)
from reconciler.errors import (
    Held,
    InvalidDesiredState,
    Paused,
    Quarantined,
    ReconcilerError,
    RolledBack,
)
from reconciler.executors.base import Executor
from reconciler.log import log
from reconciler.plan.planner import serving_release, serving_since
from reconciler.spec.hosts import limit_problems
from reconciler.spec.model import DesiredState, HostSpec


@dataclass
class HostRun:
    host: HostSpec
    desired: DesiredState
    outcome: Outcome | None = None
    result: str = NOOP
    error: ReconcilerError | None = None

    @property
    def serving(self) -> str | None:
        """What the host serves as last observed, whatever the result (None: not observed)."""
        if self.outcome is None:
            return None
        return serving_release(self.desired, self.outcome.after or self.outcome.observed)

    @property
    def serving_since(self) -> str | None:
        if self.outcome is None:
            return None
        return serving_since(self.desired, self.outcome.after or self.outcome.observed)

    def report(self, seconds: float = 0.0) -> HostReport:
        return host_report(self.desired, self.host.name, self.result, self.outcome, self.error, seconds)

    def failed(self, result: str, error: ReconcilerError) -> None:
        self.result, self.error = result, error
        if isinstance(error.outcome, Outcome):  # the latest the engine saw of this host
            self.outcome = error.outcome


@dataclass
class FleetRun:
    runs: list[HostRun]
    batches: list[list[str]] = field(default_factory=list)
    stopped: bool = False  # the failure budget ran out

    def by_result(self, result: str) -> list[str]:
        return [r.host.name for r in self.runs if r.result == result]

    @property
    def exit_code(self) -> int:
        results = {r.result for r in self.runs}
        if FAILED in results:
            return 1
        if results & {ROLLED_BACK, QUARANTINED} or self.stopped:
            return 3
        if results & {PAUSED, HELD}:
            return 4
        return 2 if PENDING in results else 0


class FleetReporter(Protocol):
    """What the fleet engine tells its caller: a Reporter per host, and each batch as it starts."""

    def for_host(self, host: HostSpec) -> Reporter: ...
    def batch(self, number: int, total: int, names: list[str]) -> None: ...


def select(desired: DesiredState, limit: Iterable[str]) -> list[HostSpec]:
    """Hosts named by --limit (host names or group names); all hosts without a limit."""
    wanted = [w for item in limit for w in item.split(",") if w]
    if not wanted:
        return list(desired.hosts)
    problems = limit_problems(desired, wanted)
    if problems:
        raise InvalidDesiredState(problems)
    return [h for h in desired.hosts if h.name in wanted or h.group in wanted]


def reconcile_fleet(
    desired: DesiredState,
    executor_for: Callable[[HostSpec], Executor],
    options: RunOptions,
    reporter: FleetReporter,
    limit: Iterable[str] = (),
    *,
    all_or_nothing: bool = False,
) -> FleetRun:
    """`all_or_nothing` (a rollback by hand): a host that cannot be planned, or is paused,
    stops the rollout before any host changes."""
    runs = [HostRun(h, desired.for_host(h)) for h in select(desired, limit)]
    fleet = FleetRun(runs)
    workers = max(1, min(desired.rollout.concurrency, len(runs)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="host") as pool:
        list(pool.map(lambda r: _plan(r, executor_for, options, reporter), runs))
        changing = [r for r in runs if r.result == PENDING]
        if all_or_nothing and any(r.result in (FAILED, PAUSED) for r in runs):
            for r in changing:
                r.result = SKIPPED
            fleet.stopped = bool(changing)
            return fleet
        if options.dry_run or not changing:
            return fleet
        size = desired.rollout.batch_size(len(runs))
        batches = [changing[i : i + size] for i in range(0, len(changing), size)]
        failures = 0
        for number, batch in enumerate(batches, 1):
            if failures > desired.rollout.max_failed:
                fleet.stopped = True
                for r in batch:
                    r.result = SKIPPED
                continue
            names = [r.host.name for r in batch]
            fleet.batches.append(names)
            reporter.batch(number, len(batches), names)
            list(pool.map(lambda r: _apply(r, executor_for, options, reporter), batch))
            failures += sum(r.result in (FAILED, ROLLED_BACK) for r in batch)
            if failures > desired.rollout.max_failed and number < len(batches):
                log.warning("rollout stopped", failed=failures, max_failed=desired.rollout.max_failed)
    return fleet


def _plan(
    run: HostRun, executor_for: Callable[[HostSpec], Executor], options: RunOptions, reporter: FleetReporter
) -> None:
    try:
        run.outcome = plan_host(run.desired, executor_for(run.host), options, reporter.for_host(run.host))
        run.result = PENDING if run.outcome.plan.changed else NOOP
        if run.result == NOOP:
            converge(run.desired, executor_for(run.host), options, reporter.for_host(run.host), run.outcome)
    except Quarantined as exc:
        run.failed(QUARANTINED, exc)
    except Paused as exc:
        run.failed(PAUSED, exc)
    except Held as exc:
        run.failed(HELD, exc)
    except ReconcilerError as exc:
        run.failed(FAILED, exc)
        log.error("host failed", host=run.host.name, error=str(exc))


def _apply(
    run: HostRun, executor_for: Callable[[HostSpec], Executor], options: RunOptions, reporter: FleetReporter
) -> None:
    assert run.outcome is not None
    try:
        run.outcome = converge(
            run.desired, executor_for(run.host), options, reporter.for_host(run.host), run.outcome
        )
        run.result = CONVERGED
    except RolledBack as exc:
        run.failed(ROLLED_BACK, exc)
    except Quarantined as exc:
        run.failed(QUARANTINED, exc)
    except Paused as exc:  # paused between observing and applying
        run.failed(PAUSED, exc)
    except Held as exc:  # held by hand, a drift of the held state corrected
        run.failed(HELD, exc)
    except ReconcilerError as exc:
        run.failed(FAILED, exc)
        log.error("host failed", host=run.host.name, error=str(exc))


class Executors:
    """One executor (one connection) per host, created on first use and kept for reuse."""

    def __init__(self, make: Callable[[DesiredState], Executor], desired: DesiredState) -> None:
        self.make = make
        self.desired = desired
        self.cache: dict[str, Executor] = {}
        self.lock = threading.Lock()

    def __call__(self, host: HostSpec) -> Executor:
        with self.lock:
            if host.name not in self.cache:
                self.cache[host.name] = self.make(self.desired.for_host(host))
            return self.cache[host.name]

    def drop(self, name: str) -> None:
        with self.lock:
            executor = self.cache.pop(name, None)
        if executor is not None:
            executor.close()

    def close(self) -> None:
        for name in list(self.cache):
            self.drop(name)


class SilentFleetReporter:
    def for_host(self, host: HostSpec) -> Reporter:
        return SilentReporter()

    def batch(self, number: int, total: int, names: list[str]) -> None:
        pass
