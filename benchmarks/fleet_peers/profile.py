"""What grows with N in ours' fleet path: probe.py at every fleet size, medians of a few runs.

Also, without any host: what parsing the fleet's known_hosts costs once (paramiko parses the
whole file on every connection, so a fleet of N parses N entries N times).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.fleet_peers.fleet import Fleet
from benchmarks.peers import hosttime
from benchmarks.peers.paths import FROM_VERSION

RUNS = 5


def known_hosts_parse_ms(path: Path, repeat: int = 20) -> float:
    """Median time paramiko takes to load this known_hosts file once, in a child process."""
    code = (
        "import sys, time, statistics\n"
        "from reconciler.executors.lean_paramiko import paramiko\n"
        "times = []\n"
        f"for _ in range({repeat}):\n"
        "    t = time.perf_counter(); c = paramiko.SSHClient(); c.load_host_keys(sys.argv[1])\n"
        "    times.append((time.perf_counter() - t) * 1000)\n"
        "print(statistics.median(times))\n"
    )
    from benchmarks.peers.tools import ours_env

    result = hosttime.run_timed([sys.executable, "-c", code, str(path)], env=ours_env(), timeout=120)
    return float(result["stdout"].strip() or "nan")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def run(fleet: Fleet, sizes: list[int], say: Callable[[str], None]) -> dict[str, Any]:
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
        }
    parse_ms = known_hosts_parse_ms(fleet.known_hosts)
    entries = sum(1 for line in fleet.known_hosts.read_text().splitlines() if line.strip())
    say(f"  known_hosts ({entries} lines) parses in {parse_ms:.2f} ms")
    return {
        "runs": RUNS,
        "sizes": {str(n): row for n, row in rows.items()},
        "known_hosts_lines": entries,
        "known_hosts_parse_ms": parse_ms,
    }
