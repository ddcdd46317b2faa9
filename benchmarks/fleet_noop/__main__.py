"""python -m benchmarks.fleet_noop [--runs 7]: the cost of checking a fleet that needs nothing.

Boots 8 test hosts, converges them all once (untimed), then times `reconcile --once` in a fresh
process, as a user types it, against the first 1, 4 and 8 of them: interleaved (1 4 8 1 4 8
...), so drift in the machine's load spreads over all three. Writes benchmarks/fleet.md.
Target: 8 hosts within 2x the time of one (observation runs in parallel, one connection each).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.fleet_noop import one_deploy_key
from tests.deploying import build_artifacts
from tests.testhost import TestHost, boot_many

REPO = Path(__file__).resolve().parents[2]
SIZES = (1, 4, 8)


def desired_state(hosts: list[TestHost], artifact: Path) -> str:
    targets = "".join(f"  - {{target: {h.ssh_target}, name: {h.name}}}\n" for h in hosts)
    return f"""app: choiros
target:
{targets}release:
  version: "1.0.0"
  source: {artifact}
backend:
  command: bin/backend --port {{port}}
  port: 8080
health: {{stable: 0.2}}
env:
  DATABASE_PATH: /var/lib/choiros/choiros.db
rollout: {{max_unavailable: 8, concurrency: 8}}
"""


def command(folder: Path, hosts: list[TestHost], known_hosts: Path) -> list[str]:
    cmd = [sys.executable, "-m", "reconciler", "--once", "-f", str(folder / "desired-state.yaml")]
    return [*cmd, "-i", str(hosts[0].key_path), "--known-hosts", str(known_hosts)]


def run(cmd: list[str], *, noop: bool = True) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), check=False
    )
    took = time.perf_counter() - t0
    if proc.returncode != 0 or (noop and "converged " in proc.stdout):  # a no-op changes nothing
        raise SystemExit(f"reconcile failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleet-noop-"))
    artifact = build_artifacts(work / "dist")["1.0.0"]
    with boot_many(max(SIZES)) as hosts:
        known_hosts = work / "known_hosts"
        known_hosts.write_text("".join(h.known_hosts.read_text() for h in hosts))
        one_deploy_key(hosts)
        folders = {}
        for n in SIZES:
            folders[n] = work / f"fleet-{n}"
            folders[n].mkdir()
            (folders[n] / "desired-state.yaml").write_text(desired_state(hosts[:n], artifact))
        run(command(folders[max(SIZES)], hosts, known_hosts), noop=False)  # converge all, untimed
        times: dict[int, list[float]] = {n: [] for n in SIZES}
        with open("/tmp/reconciler-bench.lock", "w") as lock:  # never time alongside another benchmark
            fcntl.flock(lock, fcntl.LOCK_EX)
            for _ in range(args.runs):
                for n in SIZES:
                    times[n].append(run(command(folders[n], hosts[:n], known_hosts)))
    report(times, args.runs)
    return 0


def report(times: dict[int, list[float]], runs: int) -> None:
    one = statistics.median(times[1])
    rows = [
        f"| {n} | {statistics.median(t) * 1000:.0f} ms | {min(t) * 1000:.0f}-{max(t) * 1000:.0f} ms | "
        f"{statistics.median(t) / one:.2f}x |"
        for n, t in times.items()
    ]
    ratio = statistics.median(times[8]) / one
    verdict = "met" if ratio <= 2 else f"missed by {ratio / 2:.2f}x"
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    text = f"""# Fleet no-op

`reconcile --once` on a fleet where nothing needs to change, in a fresh process each run (as a
user types it), against 1, 4 and 8 real test hosts (systemd-nspawn containers reached over SSH
through veths): {runs} runs of each, interleaved. Every host is observed over its own
connection, in parallel (`rollout.concurrency: 8`).

```
python -m benchmarks.fleet_noop --runs {runs}
```

Machine: {cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}.

| hosts | median | min-max | vs 1 host |
|---:|---:|---:|---:|
{chr(10).join(rows)}

Target: 8 hosts within 2x the time of one: **{verdict}** ({ratio:.2f}x).
"""
    out = REPO / "benchmarks" / "fleet.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    raise SystemExit(main())
