"""A fleet in watch mode: what a no-op pass costs the controller, per pass and per host.

The engine's own Watcher runs in this process, built as `reconcile --watch` builds it (one
resident agent per host on the connection it keeps), over the fleet's desired-state file at
each size. Each pass is timed on the wall clock and on this process's CPU clock (every thread:
the fleet's workers and paramiko's transports), plus the CPU of any child it waited for (git,
which a no-op pass does not run). The hosts' sshd logs (LogLevel DEBUG1) count the exec
channels the warm-up and the timed passes opened, so "one request per pass on the held channel" is seen by the
server, not assumed.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.peers import sshlog
from benchmarks.peers.paths import FROM_VERSION

if TYPE_CHECKING:
    from benchmarks.fleet_peers.fleet import Fleet
    from reconciler.engine.report import HostReport

PASSES = 30
PACE_S = 0.2  # between passes, as a watch's interval would leave the hosts idle


def _cpu_ms() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (own.ru_utime + own.ru_stime) * 1000, (kids.ru_utime + kids.ru_stime) * 1000


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def one_size(fleet: Fleet, n: int, passes: int) -> dict[str, Any]:
    from reconciler import log as logmod
    from reconciler.engine.report import NOOP
    from reconciler.engine.watch import Watcher, WatchSettings
    from reconciler.executors.connect import executor_for
    from reconciler.executors.ssh_options import SSHOptions
    from reconciler.spec.load import load

    logmod.configure("error")  # the engine logs each pass; not wanted among the benchmark's lines
    file: Path = fleet.desired(n, FROM_VERSION)
    results: list[str] = []

    class Counting(Watcher):
        def settle(self, backoff: Any, desired: Any, report: HostReport, *a: Any, **k: Any) -> bool:
            results.append(report.result)
            return super().settle(backoff, desired, report, *a, **k)

    options = SSHOptions(identity=(str(fleet.key),), known_hosts=str(fleet.known_hosts), resident=True)
    watcher = Counting(file, lambda: load(file), lambda d: executor_for(d.target, options), WatchSettings())
    hosts = fleet.hosts[:n]
    wall: list[float] = []
    cpu: list[float] = []
    child_cpu: list[float] = []
    try:
        before_warm_up = [sshlog.cursor(h) for h in hosts]
        watcher.run_pass(["warm-up"])  # connects, starts each host's agent, caches the schema verdict
        if results != [NOOP] * n:
            raise RuntimeError(f"the warm-up pass over {n} hosts was not a no-op: {results}")
        results.clear()
        warm_up = sshlog.total(sshlog.since(h, c) for h, c in zip(hosts, before_warm_up, strict=True))
        cursors = [sshlog.cursor(h) for h in hosts]
        for _ in range(passes):
            time.sleep(PACE_S)
            own0, kids0 = _cpu_ms()
            t0 = time.perf_counter()
            watcher.run_pass(["bench"])
            wall.append((time.perf_counter() - t0) * 1000)
            own1, kids1 = _cpu_ms()
            cpu.append(own1 - own0)
            child_cpu.append(kids1 - kids0)
        channels = sshlog.total(sshlog.since(h, c) for h, c in zip(hosts, cursors, strict=True))
    finally:
        if watcher.fleet_executors is not None:
            watcher.fleet_executors.close()
        if watcher.executor is not None:
            watcher.executor.close()
    if results != [NOOP] * (n * passes):
        failed = sorted({r for r in results if r != NOOP})
        raise RuntimeError(f"{n} hosts: a timed pass was not a no-op on every host ({failed})")
    cpu_median = statistics.median(cpu)
    return {
        "hosts": n,
        "passes": passes,
        "wall_ms": [round(x, 2) for x in wall],
        "cpu_ms": [round(x, 2) for x in cpu],
        "wall_median_ms": round(statistics.median(wall), 1),
        "wall_p95_ms": round(_p95(wall), 1),
        "cpu_median_ms": round(cpu_median, 1),
        "cpu_p95_ms": round(_p95(cpu), 1),
        "cpu_per_host_ms": round(cpu_median / n, 2),
        "child_cpu_ms": round(sum(child_cpu), 1),
        "channels": channels.as_dict(),
        "warm_up_channels": warm_up.as_dict(),
    }


def run(fleet: Fleet, sizes: list[int], say: Callable[[str], None], passes: int = PASSES) -> dict[str, Any]:
    rows = []
    for n in sizes:
        row = one_size(fleet, n, passes)
        rows.append(row)
        ch = row["channels"]
        say(
            f"  watch@{n:<3} {passes} no-op passes: wall {row['wall_median_ms']} ms, "
            f"controller CPU {row['cpu_median_ms']} ms per pass = {row['cpu_per_host_ms']} ms per host; "
            f"new connections {ch['connections']}, exec channels {ch['execs']} "
            f"(warm-up pass: {row['warm_up_channels']['connections']} and {row['warm_up_channels']['execs']})"
        )
    return {"passes": passes, "pace_s": PACE_S, "rows": rows}
