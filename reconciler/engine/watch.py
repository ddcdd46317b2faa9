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
from reconciler.engine.announce import announce, note_deliveries
from reconciler.engine.backoff import BACKOFF_NOTICE_AFTER, Backoff
from reconciler.engine.notify import Notice, Notifier, watch_notice
from reconciler.engine.once import Outcome, RunOptions, reconcile_once
from reconciler.engine.report import (
    CONVERGED,
    HELD,
    NOOP,
    PAUSED,
    QUARANTINED,
    ROLLED_BACK,
    HostReport,
    host_report,
    result_of,
)
from reconciler.engine.watchlog import FleetLogReporter, LogReporter
from reconciler.errors import Held, InvalidDesiredState, Paused, Quarantined, ReconcilerError, RolledBack
from reconciler.executors.base import Executor
from reconciler.log import log
from reconciler.spec.model import DesiredState, Webhook

if TYPE_CHECKING:
    from reconciler.engine.fleet import Executors
    from reconciler.engine.metrics import Metrics


@dataclass
class WatchSettings:
    interval: float = 60.0  # drift check period
    debounce_ms: int = 300
    follow: str | None = None  # git branch to fast-forward to
    fetch_interval: float = 60.0
    max_backoff: float = 300.0
    lock_timeout: float = 30.0
    limit: tuple[str, ...] = ()
    metrics_listen: str | None = None  # serve Prometheus metrics here


class Watcher:
    def __init__(
        self,
        file: Path,
        load: Callable[[], DesiredState],
        make_executor: Callable[[DesiredState], Executor],
        settings: WatchSettings,
        metrics: Metrics | None = None,
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
        # Re-entrant: SIGHUP's handler (trigger) runs on the main thread, which may hold it.
        self._lock = threading.RLock()
        self.metrics = metrics
        self.notifier: Notifier | None = None
        self.app = "?"  # the app of the last valid desired state, for notices about an invalid one
        self.last: DesiredState | None = None
        self.warned: tuple[str, ...] = ()  # settings that do nothing, as last logged

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
            # Re-read everything, the followed branch included: a repository's post-receive
            # hook that runs `systemctl reload` makes a push deploy without waiting for
            # the next fetch.
            self.last_fetch = 0.0
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
            self._notify(watch_notice("gave_up", self.app, "-", str(exc)))
            return None
        self.app, self.last = desired.app, desired
        warnings = tuple(str(w) for w in desired.warnings)
        if warnings != self.warned:  # once per revision that has them, not every drift pass
            self.warned = warnings
            if warnings:
                log.warning("settings that do nothing", warnings=list(warnings))
        self._use_hooks(desired.notify)
        if desired.is_fleet or self.settings.limit:
            self.fleet_pass(desired, reasons)
            return None
        name = desired.hosts[0].name
        note_deliveries(self.notifier, name, desired, self.executor)  # what earlier passes sent
        t0 = time.perf_counter()
        outcome = None
        try:
            executor = self._executor_for(desired)
            options = RunOptions(lock_timeout=self.settings.lock_timeout)
            outcome = reconcile_once(desired, executor, options, LogReporter())
            report = host_report(
                desired, name, CONVERGED if outcome.applied else NOOP, outcome, None, time.perf_counter() - t0
            )
        except ReconcilerError as exc:
            if self.stop.is_set() and not isinstance(exc, (Quarantined, RolledBack, Paused, Held)):
                log.info("stopped during apply; the next run converges from here", error=str(exc))
                return None
            report = host_report(desired, name, result_of(exc), None, exc, time.perf_counter() - t0)
        if self.settle(self.backoff, desired, report, reasons, single=True) and self.executor is not None:
            self.executor.close()  # a broken connection is rebuilt on the next pass
            self.executor = None
        return outcome

    def settle(
        self, backoff: Backoff, desired: DesiredState, report: HostReport, reasons: list[str], *, single: bool
    ) -> bool:
        """Log, count and notify one host's pass once; True when its connection should go."""
        host = {} if single else {"host": report.host}
        if self.metrics is not None:
            self.metrics.record(report)

        def commit() -> str:
            # Two git subprocesses: only for passes that log a change or a failure.
            return gitinfo.revision_of(desired.file).describe()

        if report.result in (NOOP, CONVERGED):
            backoff.succeeded()
            if report.applied:
                log.info(
                    "converged",
                    **host,
                    trigger=", ".join(reasons),
                    actions=len(report.actions),
                    drift=report.drift,
                    commit=commit(),
                    seconds=round(report.seconds, 2),
                )
                self._announce(desired, report)
            else:
                log.debug("no changes", **host, trigger=", ".join(reasons), seconds=round(report.seconds, 3))
            return False
        if report.result == QUARANTINED:
            # Cheap to repeat, and each pass still keeps the host on its last good state:
            # no backoff, but said once per revision of the file.
            if backoff.quarantine_reported != backoff.revision:
                backoff.quarantine_reported = backoff.revision
                log.error("release quarantined", **host, error=report.error, commit=commit())
                self._announce(desired, report)
            return False
        if report.result == HELD:
            # Said (and announced) once per hold; every pass still keeps the held state.
            key = report.hold.at if report.hold else "?"
            if backoff.hold_reported != key:
                backoff.hold_reported = key
                log.warning("host held by `reconcile rollback`; not deploying", **host, error=report.error)
                self._announce(desired, report)
            return False
        if report.result == PAUSED:
            pause = report.paused
            key = pause.at if pause else "?"
            if backoff.pause_reported != key:
                backoff.pause_reported = key
                log.warning("host paused; not converging", host=report.host, error=report.error)
            return False
        delay = backoff.failed(time.monotonic())
        if report.result == ROLLED_BACK:
            log.error(
                "release not deployed",
                **host,
                error=report.error,
                commit=commit(),
                retry_in_s=round(delay, 1),
            )
            self._announce(desired, report)
            return not single
        log.error(
            "pass failed", **host, error=report.error, retry_in_s=round(delay, 1), failures=backoff.failures
        )
        if backoff.failures == 1:
            self._announce(desired, report)
        elif backoff.failures == BACKOFF_NOTICE_AFTER:
            item = watch_notice(
                "backoff",
                desired.app,
                report.host,
                report.error or "",
                failures=backoff.failures,
                retry_in_s=round(delay, 1),
                version=desired.release.version,
            )
            self._notify(item)
        return True

    # -- notifications ---------------------------------------------------------------------

    def _use_hooks(self, hooks: tuple[Webhook, ...]) -> None:
        """The webhooks of the desired state as last loaded (an edit to notify: applies at once)."""
        if self.notifier is not None and self.notifier.hooks == hooks:
            return
        if self.notifier is not None:
            self.notifier.close()
        self.notifier = Notifier(hooks) if hooks else None

    def _announce(self, desired: DesiredState, report: HostReport) -> None:
        announce(self.notifier, [report], file=desired.file, mode="watch")

    def _notify(self, item: Notice) -> None:
        if self.notifier is not None:
            self.notifier.send(item)

    def fleet_pass(self, desired: DesiredState, reasons: list[str]) -> None:
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
                note_deliveries(
                    self.notifier, host.name, desired.for_host(host), executors.cache.get(host.name)
                )
        if not ready:
            return
        t0 = time.perf_counter()
        run = fleet.reconcile_fleet(
            desired,
            executors,
            RunOptions(lock_timeout=self.settings.lock_timeout),
            FleetLogReporter(),
            ready,
        )
        seconds = time.perf_counter() - t0
        for r in run.runs:
            if self.settle(
                self.host_backoff[r.host.name], r.desired, r.report(seconds), reasons, single=False
            ):
                executors.drop(r.host.name)  # a broken connection is rebuilt next time

    # -- git -------------------------------------------------------------------------------

    def fetch_due_in(self, now: float) -> float:
        """Seconds until --follow fetches again (0: now)."""
        if not self.last_fetch:
            return 0.0
        return max(0.0, self.last_fetch + self.settings.fetch_interval - now)

    def follow_git(self) -> None:
        branch = self.settings.follow
        if not branch or self.fetch_due_in(time.monotonic()) > 0:
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
        before = gitinfo.head(self.file)
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
            return
        after = gitinfo.head(self.file)
        if after and after != before:
            # Said once per push, and named as the reason of the pass that deploys it.
            log.info("followed a push", branch=branch, commit=after[:12])
            with self._lock:
                self.reasons.append(f"push to {branch}")

    # -- the loop --------------------------------------------------------------------------

    def next_wait(self) -> float:
        jitter = random.uniform(0.9, 1.1)  # noqa: S311 - spreads drift checks of many hosts
        wait = self.settings.interval * jitter
        if self.settings.follow:
            # Wake when the fetch is due, not a whole fetch interval from now: a pass between
            # two fetches (a drift tick, a file change) must not put the next fetch off.
            wait = min(wait, self.fetch_due_in(time.monotonic()) + 0.01)
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
        if self.notifier is not None:
            # The last pass's notices get one timeout to go out, and their outcomes are
            # written to the host's history before the connection closes.
            self.notifier.wait(max(h.timeout for h in self.notifier.hooks))
            if self.last is not None and not self.last.is_fleet:
                note_deliveries(self.notifier, self.last.hosts[0].name, self.last, self.executor)
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
        metrics_listen=args.metrics_listen,
    )
    metrics = None
    if settings.metrics_listen:
        from reconciler.engine.metrics import Metrics

        metrics = Metrics()
        try:
            metrics.serve(settings.metrics_listen)
        except ReconcilerError as exc:
            log.error("cannot serve metrics", error=str(exc))
            return 1
        log.info("serving metrics", listen=settings.metrics_listen)
    watcher = Watcher(Path(args.file), lambda: load_desired(args), make_executor, settings, metrics)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, watcher.on_signal)
    watching = threading.Thread(target=watcher.watch_file, name="watch-file", daemon=True)
    watching.start()
    log.info("watching", file=str(args.file), interval_s=settings.interval, follow=settings.follow)
    try:
        return watcher.loop()
    finally:
        # watchfiles waits in Rust. A daemon thread still there when the interpreter finalizes
        # is ended with pthread_exit, whose unwinding Rust turns into an abort (Python 3.9:
        # "FATAL: exception not rethrown", SIGABRT instead of exit 0). It sees `stop` within
        # rust_timeout.
        watcher.stop.set()
        watching.join(timeout=5)
