"""One `reconcile --once` on a fleet, in this process, with timers around what could grow with N.

    python -m benchmarks.fleet_peers.probe OUT.json -- RECONCILE ARGS...

Nothing in reconciler/ is changed: the functions are wrapped from outside, before the CLI runs.
Per host: the SSH connection (TCP, key exchange, auth: SSHExecutor.connect), the known_hosts
files it parses (known_hosts.load, ours' reader, called once per connection), opening the
session channel, waiting for the agent's answer, and the whole observe + plan (plan_host).
For the process: wall and CPU time, the most threads alive at once, and how late a thread that
sleeps 1 ms wakes up (a probe of GIL contention: a runnable thread waits for the GIL up to the
switch interval, 5 ms, while other threads run Python).
"""

from __future__ import annotations

import functools
import json
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EVENTS: list[dict[str, Any]] = []
_LOCK = threading.Lock()


def _timed(kind: str, fn: Callable[..., Any], label: Callable[..., str] | None = None) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        c0 = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            event = {
                "kind": kind,
                "t0": t0,
                "ms": (time.perf_counter() - t0) * 1000,
                "cpu_ms": (time.thread_time() - c0) * 1000,
                "who": label(*args, **kwargs) if label else "",
            }
            with _LOCK:
                EVENTS.append(event)

    return wrapper


class Probe(threading.Thread):
    """Sleeps 1 ms at a time; records how late it wakes up and how many threads are alive."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="probe")
        self.lags: list[float] = []
        self.threads = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.perf_counter()
            time.sleep(0.001)
            self.lags.append((time.perf_counter() - t - 0.001) * 1000)
            self.threads = max(self.threads, threading.active_count())


def instrument() -> None:
    from reconciler.engine import fleet, once
    from reconciler.executors import ssh
    from reconciler.executors.lean_paramiko import paramiko

    ssh.SSHExecutor.connect = _timed(  # type: ignore[method-assign]
        "connect", ssh.SSHExecutor.connect, lambda self: self.target.host
    )
    ssh.SSHExecutor._read_events = _timed(  # type: ignore[method-assign]
        "agent", ssh.SSHExecutor._read_events, lambda self, *a: self.target.host
    )
    # ssh.py looks the reader up on its module at each connection: wrapped there.
    ssh.known_hosts.load = _timed("known_hosts", ssh.known_hosts.load)  # type: ignore[assignment]
    paramiko.Transport.open_session = _timed("session", paramiko.Transport.open_session)  # type: ignore[method-assign]
    # Imported by name: wrapped where it is looked up, by a fleet (fleet.py) and by a single host
    # (once.reconcile_once: a fleet of one host runs as one host).
    plan_host = _timed("plan_host", once.plan_host, lambda desired, *a: str(desired.target.host))
    fleet.plan_host = plan_host  # type: ignore[attr-defined]
    once.plan_host = plan_host
    fleet.reconcile_fleet = _timed("fleet", fleet.reconcile_fleet)
    fleet.Executors.close = _timed("close", fleet.Executors.close)  # type: ignore[method-assign]


def summary(events: list[dict[str, Any]], wall_ms: float, cpu_ms: float, probe: Probe) -> dict[str, Any]:
    def stats(kind: str) -> dict[str, float]:
        values = [e["ms"] for e in events if e["kind"] == kind]
        cpu = [e["cpu_ms"] for e in events if e["kind"] == kind]
        if not values:
            return {"n": 0}
        starts = [e["t0"] for e in events if e["kind"] == kind]
        return {
            "n": len(values),
            "median_ms": statistics.median(values),
            "max_ms": max(values),
            "sum_ms": sum(values),
            "cpu_sum_ms": sum(cpu),
            "start_spread_ms": (max(starts) - min(starts)) * 1000,  # first to last start
        }

    lags = sorted(probe.lags) or [0.0]
    return {
        "wall_ms": wall_ms,
        "cpu_ms": cpu_ms,
        "threads_max": probe.threads,
        "wake_lag_ms": {
            "median": statistics.median(lags),
            "p90": lags[int(0.9 * (len(lags) - 1))],
            "max": lags[-1],
        },
        "steps": {
            k: stats(k) for k in ("connect", "known_hosts", "session", "agent", "plan_host", "fleet", "close")
        },
    }


def main(argv: list[str]) -> int:
    out, args = Path(argv[0]), argv[argv.index("--") + 1 :]
    t0 = time.perf_counter()
    instrument()
    from reconciler.cli import main as reconcile

    probe = Probe()
    probe.start()
    start = time.perf_counter()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    rc = reconcile(args)
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = (time.perf_counter() - start) * 1000
    probe.stop.set()
    probe.join()
    cpu = (usage1.ru_utime - usage0.ru_utime + usage1.ru_stime - usage0.ru_stime) * 1000
    data = summary(EVENTS, wall, cpu, probe)
    data["rc"] = rc
    from reconciler.executors.bootstrap import agent_blob

    data["agent_blob_computed"] = agent_blob.cache_info().misses  # > 1: threads compressed it at once
    data["setup_ms"] = (start - t0) * 1000
    out.write_text(json.dumps(data))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
