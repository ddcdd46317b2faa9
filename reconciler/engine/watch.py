"""Watch mode: the same pass as --once, triggered by file changes, a drift timer and SIGHUP.

Level-triggered: an event only wakes the loop; every pass observes the whole host and plans
from scratch, so a missed event costs nothing but latency. Failures back off exponentially
(with jitter, capped) per revision of the desired-state file; a release that failed its
health gate parks that revision until the file changes. The connection to the host is held
between passes, so a pass that finds nothing to do is one round trip.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from reconciler.engine import gitinfo
from reconciler.engine.once import Outcome, RunOptions, reconcile_once
from reconciler.errors import (
    InvalidDesiredState,
    Quarantined,
    ReconcilerError,
    RolledBack,
)
from reconciler.executors.base import Event, Executor
from reconciler.log import log
from reconciler.observe.snapshot import Observed
from reconciler.plan.actions import Plan
from reconciler.spec.model import DesiredState, HostSpec

if TYPE_CHECKING:
    from reconciler.engine.fleet import Executors


@dataclass
class Backoff:
    """Exponential backoff with full jitter, reset when the desired-state revision changes."""

    base: float = 2.0
    cap: float = 300.0
    revision: str = ""
    failures: int = 0
    until: float = 0.0  # monotonic time before which this revision is not retried
    parked: bool = False  # the file is invalid: wait for a new revision
    quarantine_reported: str = ""  # the revision whose quarantine was last logged

    def reset_if_changed(self, revision: str) -> None:
        if revision != self.revision:
            self.revision, self.failures, self.until, self.parked = revision, 0, 0.0, False

    def failed(self, now: float) -> float:
        self.failures += 1
        delay = min(self.cap, self.base * 2 ** (self.failures - 1))
        delay = random.uniform(delay / 2, delay)  # noqa: S311 - jitter, not security
        self.until = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures, self.until = 0, 0.0


@dataclass
class WatchSettings:
    interval: float = 60.0  # drift check period
    debounce_ms: int = 300
    follow: str | None = None  # git branch to fast-forward to
    fetch_interval: float = 60.0
    max_backoff: float = 300.0
    lock_timeout: float = 30.0
    limit: tuple[str, ...] = ()


class _LogReporter:
    """Watch mode talks through structured logs: plans that change something, and progress."""

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


class _FleetLogReporter:
    def for_host(self, host: HostSpec) -> _LogReporter:
        return _LogReporter(host.name)

    def batch(self, number: int, total: int, names: list[str]) -> None:
        log.info("batch", number=number, of=total, hosts=names)


class Watcher:
    def __init__(
        self,
        file: Path,
        load: Callable[[], DesiredState],
        make_executor: Callable[[DesiredState], Executor],
        settings: WatchSettings,
    ) -> None:
        self.file = file
        self.load = load
        self.make_executor = make_executor
        self.settings = settings
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.backoff = Backoff(cap=settings.max_backoff)
        self.host_backoff: dict[str, Backoff] = {}
        self.fleet_executors: Executors | None = None
        self.executor: Executor | None = None
        self.executor_target: str | None = None
        self.passes = 0
        self.last_fetch = 0.0
        self.reasons: list[str] = ["start"]
        self._lock = threading.Lock()

    # -- triggers --------------------------------------------------------------------------

    def trigger(self, reason: str) -> None:
        with self._lock:
            self.reasons.append(reason)
        self.wake.set()

    def _take_reasons(self) -> list[str]:
        with self._lock:
            reasons, self.reasons = self.reasons, []
        return reasons

    def watch_file(self) -> None:
        """watchfiles on the folder: editors that save by rename still count as a change."""
        from watchfiles import watch

        target = self.file.resolve()

        def only_ours(_change: Any, path: str) -> bool:
            return Path(path) == target

        for _changes in watch(
            target.parent,
            watch_filter=only_ours,
            debounce=self.settings.debounce_ms,
            stop_event=self.stop,
            rust_timeout=1000,
            yield_on_timeout=False,
        ):
            self.trigger("file changed")

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.reload.set()
            self.trigger("SIGHUP")
            return
        log.info("stopping after the current action", signal=signal.Signals(signum).name)
        self.stop.set()
        self.wake.set()
        executors = [self.executor] if self.executor is not None else []
        if self.fleet_executors is not None:
            executors += list(self.fleet_executors.cache.values())
        for executor in executors:
            threading.Thread(target=executor.cancel, daemon=True).start()

    # -- one pass --------------------------------------------------------------------------

    def revision(self) -> str:
        try:
            return hashlib.sha256(self.file.read_bytes()).hexdigest()
        except OSError:
            return "unreadable"

    def _executor_for(self, desired: DesiredState) -> Executor:
        target = str(desired.target)
        if self.executor is None or self.executor_target != target or self.reload.is_set():
            if self.executor is not None:
                self.executor.close()
            self.executor = self.make_executor(desired)
            self.executor_target = target
            self.reload.clear()
        return self.executor

    def run_pass(self, reasons: list[str]) -> Outcome | None:
        now = time.monotonic()
        self.backoff.reset_if_changed(self.revision())
        if self.backoff.parked:
            log.debug("desired release is quarantined; waiting for a new revision of the file")
            return None
        if now < self.backoff.until:
            log.debug("backing off", seconds=round(self.backoff.until - now, 1))
            return None
        self.passes += 1
        try:
            desired = self.load()
        except InvalidDesiredState as exc:
            # Nothing is touched; wait for the file to change rather than retrying it.
            self.backoff.parked = True
            log.error("desired state is invalid; waiting for a fix", problems=[str(p) for p in exc.problems])
            return None

        def commit() -> str:
            # Two git subprocesses: only for passes that log a change or a failure.
            return gitinfo.revision_of(desired.file).describe()

        if desired.is_fleet or self.settings.limit:
            self.fleet_pass(desired, reasons, commit)
            return None
        try:
            executor = self._executor_for(desired)
            outcome = reconcile_once(
                desired,
                executor,
                RunOptions(lock_timeout=self.settings.lock_timeout),
                _LogReporter(),
            )
        except Quarantined as exc:
            # Cheap to repeat, and each pass still keeps the host on its last good state:
            # no backoff, but said once per revision of the file.
            if self.backoff.quarantine_reported != self.backoff.revision:
                self.backoff.quarantine_reported = self.backoff.revision
                log.error("release quarantined", error=str(exc), commit=commit())
            return None
        except RolledBack as exc:
            delay = self.backoff.failed(time.monotonic())
            log.error("release not deployed", error=str(exc), commit=commit(), retry_in_s=round(delay, 1))
            return None
        except ReconcilerError as exc:
            if self.stop.is_set():
                log.info("stopped during apply; the next run converges from here", error=str(exc))
                return None
            delay = self.backoff.failed(time.monotonic())
            log.error(
                "pass failed", error=str(exc), retry_in_s=round(delay, 1), failures=self.backoff.failures
            )
            if self.executor is not None:  # a broken connection is rebuilt on the next pass
                self.executor.close()
                self.executor = None
            return None
        self.backoff.succeeded()
        if outcome.plan.changed:
            log.info(
                "converged",
                trigger=", ".join(reasons),
                actions=len(outcome.plan.actions),
                commit=commit(),
                apply_ms=round(outcome.timings.get("apply_ms", 0), 1),
            )
        else:
            log.debug(
                "no changes", trigger=", ".join(reasons), observe_ms=round(outcome.timings["observe_ms"], 1)
            )
        return outcome

    def fleet_pass(self, desired: DesiredState, reasons: list[str], commit: Callable[[], str]) -> None:
        """Each host backs off on its own: an unreachable host never holds the others back."""
        from reconciler.engine import fleet

        if self.fleet_executors is None or self.reload.is_set():
            if self.fleet_executors is not None:
                self.fleet_executors.close()
            self.fleet_executors = fleet.Executors(self.make_executor, desired)
            self.reload.clear()
        executors = self.fleet_executors
        executors.desired = desired
        now = time.monotonic()
        ready = []
        for host in fleet.select(desired, self.settings.limit):
            backoff = self.host_backoff.setdefault(host.name, Backoff(cap=self.settings.max_backoff))
            backoff.reset_if_changed(self.backoff.revision)
            if not backoff.parked and now >= backoff.until:
                ready.append(host.name)
        if not ready:
            return
        run = fleet.reconcile_fleet(
            desired,
            executors,
            RunOptions(lock_timeout=self.settings.lock_timeout),
            _FleetLogReporter(),
            ready,
        )
        for r in run.runs:
            backoff = self.host_backoff[r.host.name]
            if r.result == fleet.QUARANTINED:
                if backoff.quarantine_reported != backoff.revision:
                    backoff.quarantine_reported = backoff.revision
                    log.error("release quarantined", host=r.host.name, error=str(r.error), commit=commit())
            elif r.result in (fleet.FAILED, fleet.ROLLED_BACK):
                delay = backoff.failed(time.monotonic())
                executors.drop(r.host.name)  # a broken connection is rebuilt next time
                log.error("pass failed", host=r.host.name, error=str(r.error), retry_in_s=round(delay, 1))
            else:
                backoff.succeeded()
        changed = run.by_result(fleet.CONVERGED)
        if changed:
            log.info("converged", trigger=", ".join(reasons), hosts=changed, commit=commit())

    # -- git -------------------------------------------------------------------------------

    def follow_git(self) -> None:
        branch = self.settings.follow
        if not branch or time.monotonic() - self.last_fetch < self.settings.fetch_interval:
            return
        self.last_fetch = time.monotonic()
        folder = str(self.file.resolve().parent)
        fetch = subprocess.run(
            ["git", "-C", folder, "fetch", "--quiet", "origin", branch],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if fetch.returncode != 0:
            log.warning("git fetch failed", error=fetch.stderr.strip()[-300:])
            return
        merge = subprocess.run(
            ["git", "-C", folder, "merge", "--ff-only", "--quiet", f"origin/{branch}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if merge.returncode != 0:
            log.error(
                "cannot fast-forward; not deploying the remote change", error=merge.stderr.strip()[-300:]
            )

    # -- the loop --------------------------------------------------------------------------

    def next_wait(self) -> float:
        jitter = random.uniform(0.9, 1.1)  # noqa: S311 - spreads drift checks of many hosts
        wait = self.settings.interval * jitter
        if self.settings.follow:
            wait = min(wait, self.settings.fetch_interval)
        if self.backoff.until:
            wait = min(wait, max(0.0, self.backoff.until - time.monotonic()) + 0.01)
        return wait

    def loop(self) -> int:
        while not self.stop.is_set():
            self.follow_git()
            self.run_pass(self._take_reasons() or ["drift check"])
            if self.stop.is_set():
                break
            self.wake.wait(self.next_wait())
            self.wake.clear()
        if self.executor is not None:
            self.executor.close()
        if self.fleet_executors is not None:
            self.fleet_executors.close()
        log.info("watch mode stopped", passes=self.passes)
        return 0


def run(
    args: argparse.Namespace,
    load_desired: Callable[[argparse.Namespace], DesiredState],
    make_executor: Callable[[DesiredState], Executor],
) -> int:
    settings = WatchSettings(
        interval=args.interval,
        follow=args.follow,
        fetch_interval=args.fetch_interval,
        max_backoff=args.max_backoff,
        limit=tuple(args.limit),
        lock_timeout=args.lock_timeout or 30.0,
    )
    watcher = Watcher(Path(args.file), lambda: load_desired(args), make_executor, settings)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, watcher.on_signal)
    threading.Thread(target=watcher.watch_file, name="watch-file", daemon=True).start()
    log.info("watching", file=str(args.file), interval_s=settings.interval, follow=settings.follow)
    return watcher.loop()
