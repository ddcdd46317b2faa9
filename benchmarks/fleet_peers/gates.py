"""How much of a rolling deploy is its health gates: measured where each gate ran.

A batch is done when its slowest host has passed its gate, so a run's gate time is the sum over
its batches of the longest gate in each; its share is that over the run's wall time. The rest
is the tool: connecting, looking, copying, restarting, reloading Caddy, and its own start-up.

- ours: its own output, one line per action and host: `[rth3]   ok 7/9 health-check ... (1.3 s)`
  (the agent's measure, printed to 0.1 s above one second), and `-- batch 2/4: rth5, rth6, ...`.
- the peers: health_gate.py (benchmarks/peers/project.py) appends "start end status" to
  /run/bench-health-gate.log on the host each time it runs; the batches are the inventory's
  order in quarters, as Ansible's `serial` and the pyinfra groups take them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from benchmarks.peers.project import GATE_LOG

if TYPE_CHECKING:
    from tests.testhost import TestHost

_OURS_GATE = re.compile(r"^\[(\S+)\]\s+ok \d+/\d+ health-check \S+ \((\d+(?:\.\d+)?) (ms|s)\)$", re.MULTILINE)
_OURS_BATCH = re.compile(r"^-- batch \d+/\d+: (.+)$", re.MULTILINE)


def ours_gates(output: str) -> dict[str, float]:
    """Seconds each host spent in its health gate, from ours' human output."""
    gates: dict[str, float] = {}
    for name, value, unit in _OURS_GATE.findall(output):
        gates[name] = gates.get(name, 0.0) + float(value) / (1000 if unit == "ms" else 1)
    return gates


def ours_batches(output: str) -> list[list[str]]:
    return [[n.strip() for n in names.split(",")] for names in _OURS_BATCH.findall(output)]


def parse_gate_log(text: str) -> float:
    """Seconds of gate in one host's /run/bench-health-gate.log (every gate run added up)."""
    total = 0.0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            total += float(parts[1]) - float(parts[0])
    return total


def peer_gates(hosts: Sequence[TestHost]) -> dict[str, float]:
    """Read and clear the gate logs of these hosts."""
    gates = {}
    for host in hosts:
        data = host.read(GATE_LOG)
        gates[host.name] = parse_gate_log(data.decode()) if data else 0.0
        host.exec(["rm", "-f", GATE_LOG])
    return gates


def clear(hosts: Sequence[TestHost]) -> None:
    for host in hosts:
        host.exec(["rm", "-f", GATE_LOG])


def per_batch(gates: dict[str, float], batches: list[list[str]]) -> list[float]:
    """The longest gate of each batch: how long the rollout waited on gates there."""
    return [max((gates.get(name, 0.0) for name in batch), default=0.0) for batch in batches]
