"""What grows with N in ours' fleet path: probe.py at every fleet size, medians of a few runs.

Also, without any host: what parsing the fleet's known_hosts costs once (paramiko parses the
whole file on every connection, so a fleet of N parses N entries N times); and on one host,
the CPU one request costs inside it, taken apart: sshd alone (`ssh HOST true`), at its default
LogLevel and at the DEBUG1 the benchmark uses to count sessions in its warm-up round, and the
host's python3 starting (`python3 -c pass`, and with -S, without the site module). On this machine
every host's CPU comes out of the same 2 cores, so it is part of every tool's time.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.fleet_peers.fleet import Fleet
from benchmarks.peers import hosttime
from benchmarks.peers.paths import FROM_VERSION
from benchmarks.peers.phases import host_cpu_s

if TYPE_CHECKING:
    from tests.testhost import TestHost

RUNS = 5


def known_hosts_parse_ms(path: Path, repeat: int = 20) -> float:
    """Median time ours' known_hosts reader (the one every connection uses) takes to load this
    file once, in a child process."""
    code = (
        "import sys, time, statistics\n"
        "from reconciler.executors import known_hosts\n"
        "times = []\n"
        f"for _ in range({repeat}):\n"
        "    t = time.perf_counter(); known_hosts.load([sys.argv[1]])\n"
        "    times.append((time.perf_counter() - t) * 1000)\n"
        "print(statistics.median(times))\n"
    )
    from benchmarks.peers.tools import ours_env

    result = hosttime.run_timed([sys.executable, "-c", code, str(path)], env=ours_env(), timeout=120)
    return float(result["stdout"].strip() or "nan")


def _ssh(fleet: Fleet, host: TestHost, command: str) -> list[str]:
    return [
        "ssh", "-i", str(fleet.key),
        "-o", f"UserKnownHostsFile={fleet.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ControlPath=none",
        "-o", "KexAlgorithms=curve25519-sha256",  # what paramiko negotiates
        f"root@{host.address}", command,
    ]  # fmt: skip


def host_cpu_breakdown(fleet: Fleet, runs: int = 9) -> dict[str, float]:
    """Median CPU ms used inside the first host by one SSH request of each kind."""
    from benchmarks.peers import sshlog
    from benchmarks.peers.runner import wait_for_sshd

    host = fleet.hosts[0]

    def cpu_of(command: str) -> float:
        values = []
        for _ in range(runs):
            t0, before = time.perf_counter(), host_cpu_s([host])
            result = hosttime.run_timed(_ssh(fleet, host, command), timeout=60)
            if result["rc"] != 0:
                raise RuntimeError(f"ssh {command!r} failed: {result['stderr']}")
            time.sleep(0.05)  # let sshd's session end (and its log lines) be accounted
            used = host_cpu_s([host]) - before - idle * (time.perf_counter() - t0)
            values.append(used * 1000)
        return statistics.median(values)

    before = host_cpu_s([host])
    time.sleep(1.0)
    idle = host_cpu_s([host]) - before  # CPU s per s of wall with nothing to do (systemd, Caddy, the app)
    out = {"idle CPU ms per second": idle * 1000}
    sshlog.disable_debug(host)  # sshd's default LogLevel, as in the timed runs
    wait_for_sshd(host.address)
    out["sshd alone: `true`"] = cpu_of("true")
    out["`python3 -c pass`"] = cpu_of("python3 -c pass")
    out["`python3 -S -c pass` (no site module)"] = cpu_of("python3 -S -c pass")
    sshlog.enable_debug(host)
    try:
        wait_for_sshd(host.address)
        out["sshd alone: `true`, at LogLevel DEBUG1 (to count sessions)"] = cpu_of("true")
    finally:
        sshlog.disable_debug(host)
        wait_for_sshd(host.address)
    return out


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def run(
    fleet: Fleet, sizes: list[int], samples: list[dict[str, Any]], say: Callable[[str], None]
) -> dict[str, Any]:
    """`samples`: the no-op samples of this run (ours' CPU inside the hosts per host)."""
    raw: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    with tempfile.TemporaryDirectory(prefix="fleet-probe-") as tmp:
        for i in range(RUNS):
            for n in sizes:
                tool = fleet.ours(n)
                argv = tool.argv(FROM_VERSION)
                args = argv[argv.index("reconciler") + 1 :]
                out = Path(tmp) / f"{n}-{i}.json"
                cmd = [sys.executable, "-m", "benchmarks.fleet_peers.probe", str(out), "--", *args]
                result = hosttime.run_timed(cmd, env=tool.env, cwd=tool.cwd, timeout=300)
                if result["rc"] != 0 or not out.exists():
                    raise RuntimeError(
                        f"the probe failed at {n} hosts:\n{result['stdout']}\n{result['stderr']}"
                    )
                raw[n].append(json.loads(out.read_text()))
        say(f"  probe: {RUNS} runs at each of {sizes} hosts")
    rows = {}
    for n, runs in raw.items():

        def step(kind: str, key: str, runs: list[dict[str, Any]] = runs) -> float:
            return _median([r["steps"][kind].get(key, 0.0) for r in runs])

        rows[n] = {
            "wall_ms": _median([r["wall_ms"] for r in runs]),
            "cpu_ms": _median([r["cpu_ms"] for r in runs]),
            "threads_max": _median([r["threads_max"] for r in runs]),
            "wake_lag_p90_ms": _median([r["wake_lag_ms"]["p90"] for r in runs]),
            "wake_lag_max_ms": _median([r["wake_lag_ms"]["max"] for r in runs]),
            "connect_median_ms": step("connect", "median_ms"),
            "connect_max_ms": step("connect", "max_ms"),
            "connect_cpu_sum_ms": step("connect", "cpu_sum_ms"),
            "known_hosts_n": step("known_hosts", "n"),
            "known_hosts_sum_ms": step("known_hosts", "sum_ms"),
            "known_hosts_cpu_sum_ms": step("known_hosts", "cpu_sum_ms"),
            "session_median_ms": step("session", "median_ms"),
            "agent_median_ms": step("agent", "median_ms"),
            "agent_max_ms": step("agent", "max_ms"),
            "plan_host_median_ms": step("plan_host", "median_ms"),
            "plan_host_max_ms": step("plan_host", "max_ms"),
            "plan_host_start_spread_ms": step("plan_host", "start_spread_ms"),
            "fleet_ms": step("fleet", "median_ms"),
            "close_ms": step("close", "median_ms"),
            "agent_blob_computed": _median([r["agent_blob_computed"] for r in runs]),
        }
    parse_ms = known_hosts_parse_ms(fleet.known_hosts)
    entries = sum(1 for line in fleet.known_hosts.read_text().splitlines() if line.strip())
    say(f"  known_hosts ({entries} lines) parses in {parse_ms:.2f} ms")
    breakdown = host_cpu_breakdown(fleet)
    say("  CPU inside a host per request: " + ", ".join(f"{k} {v:.1f} ms" for k, v in breakdown.items()))
    ours_host = [
        s["host_cpu_s"] * 1000 / n
        for n in sizes
        for s in samples
        if s["phase"] == f"noop@{n}" and s["tool"] == "ours" and s["run"] >= 0
    ]
    return {
        "host_cpu": breakdown,
        "ours_host_cpu_per_host_ms": _median(ours_host),
        "runs": RUNS,
        "sizes": {str(n): row for n, row in rows.items()},
        "known_hosts_lines": entries,
        "known_hosts_parse_ms": parse_ms,
    }
