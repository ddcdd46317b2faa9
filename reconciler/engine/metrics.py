"""Prometheus metrics of watch mode (`--metrics-listen ADDR`), one series per host.

    reconciler_passes_total{host,result}           passes by result: noop, converged, rolled_back,
                                                   quarantined, failed, paused, held
    reconciler_failures_total{host}                passes that failed or rolled back
    reconciler_rollbacks_total{host}               automatic rollbacks on the host
    reconciler_actions_applied_total{host,action}  actions of converged passes, by kind
    reconciler_drift_corrected_total{host}         passes that put back a configuration the host
                                                   had already served (a hand edit, a stopped unit)
    reconciler_last_success_timestamp_seconds{host}  end of the last pass that left the host as desired
    reconciler_pass_duration_seconds{host}         histogram
    reconciler_quarantined_releases{host}          configurations quarantined on the host
    reconciler_paused{host}                        1 while `reconcile pause` holds
    reconciler_held{host}                          1 while `reconcile rollback` holds the host
    reconciler_serving_info{host,release,since}    the release the host serves

Imported only when watch mode is asked to serve metrics: prometheus_client is not light.
"""

from __future__ import annotations

import time
from typing import Any

from reconciler.engine.report import (
    CONVERGED,
    FAILED,
    HELD,
    NOOP,
    PAUSED,
    QUARANTINED,
    ROLLED_BACK,
    HostReport,
)
from reconciler.errors import ReconcilerError

RESULTS = (NOOP, CONVERGED, ROLLED_BACK, QUARANTINED, FAILED, PAUSED, HELD)
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def parse_listen(text: str) -> tuple[str, int]:
    """ADDR as `HOST:PORT`, `:PORT` (every address) or `[IPv6]:PORT`."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ReconcilerError(f"--metrics-listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9108 or :9108")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - ":PORT" asks for every address
    return host, int(port)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.registry = CollectorRegistry()
        r = self.registry
        self.passes = Counter(
            "reconciler_passes", "Watch mode passes by result.", ["host", "result"], registry=r
        )
        self.failures = Counter(
            "reconciler_failures", "Passes that failed or rolled back.", ["host"], registry=r
        )
        self.rollbacks = Counter(
            "reconciler_rollbacks", "Automatic rollbacks on the host.", ["host"], registry=r
        )
        self.actions = Counter(
            "reconciler_actions_applied",
            "Actions of converged passes, by kind.",
            ["host", "action"],
            registry=r,
        )
        self.drift = Counter(
            "reconciler_drift_corrected", "Passes that corrected drift from a configuration already served.",
            ["host"], registry=r,
        )  # fmt: skip
        self.last_success = Gauge(
            "reconciler_last_success_timestamp_seconds",
            "Unix time of the end of the last pass that left the host as desired.",
            ["host"],
            registry=r,
        )
        self.duration = Histogram(
            "reconciler_pass_duration_seconds", "Duration of a pass.", ["host"], buckets=BUCKETS, registry=r
        )
        self.quarantined = Gauge(
            "reconciler_quarantined_releases", "Configurations quarantined on the host.", ["host"], registry=r
        )
        self.paused = Gauge("reconciler_paused", "1 while the host is paused.", ["host"], registry=r)
        self.held = Gauge(
            "reconciler_held", "1 while `reconcile rollback` holds the host.", ["host"], registry=r
        )
        self.serving = Info("reconciler_serving", "The release the host serves.", ["host"], registry=r)
        self.hosts: set[str] = set()

    def serve(self, listen: str) -> Any:
        from prometheus_client import start_http_server

        addr, port = parse_listen(listen)
        try:
            return start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise ReconcilerError(
                f"--metrics-listen {listen}: cannot listen: {exc.strerror or exc}"
            ) from None

    def _first_sight(self, host: str) -> None:
        """Create every series at 0, so `increase()` sees the first rollback as one."""
        self.hosts.add(host)
        for result in RESULTS:
            self.passes.labels(host, result)
        for counter in (self.failures, self.rollbacks, self.drift):
            counter.labels(host)

    def record(self, report: HostReport) -> None:
        host = report.host
        if host not in self.hosts:
            self._first_sight(host)
        self.passes.labels(host, report.result).inc()
        self.duration.labels(host).observe(report.seconds)
        if report.result in (FAILED, ROLLED_BACK):
            self.failures.labels(host).inc()
        if report.result == ROLLED_BACK:
            self.rollbacks.labels(host).inc()
        if report.result in (NOOP, CONVERGED):
            self.last_success.labels(host).set(time.time())
        if report.result == CONVERGED and report.applied:
            for action in report.actions:
                self.actions.labels(host, action["action"]).inc()
            if report.drift:
                self.drift.labels(host).inc()
        if report.observed:
            self.quarantined.labels(host).set(report.quarantined)
            self.paused.labels(host).set(1 if report.paused else 0)
            self.held.labels(host).set(1 if report.hold else 0)
            self.serving.labels(host).info(
                {"release": report.serving or "", "since": report.serving_since or ""}
            )
