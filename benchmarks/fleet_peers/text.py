"""The prose of benchmarks/fleet-peers.md: how each tool is set up, why this many hosts, and
what the profile of ours' fleet path found (its figures filled in from the run)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks.peers.report import Row

if TYPE_CHECKING:
    from benchmarks.fleet_peers.runner import FleetResults

WHY_HOSTS = """\
{n} hosts. Each took {mem} MiB of this machine's memory (MemAvailable before boot and after the
fleet was converged), so the 23.5 GiB here would hold well over a hundred; the {n} booted in {boot} s.
Memory is not the limit: the two cores are. The hosts' sshd and the agent's Python run on the same
2 cores as the tools, so every host a run touches costs CPU that all tools wait for: at {n} hosts ours'
no-op used {host_cpu:.0f} ms of CPU inside the hosts against {client_cpu:.0f} ms of its own. Past the
point where the cores are busy, more hosts measure this machine rather than the tools, and other
people's tests run on it at the same time: {n} is what the issue asks for, and what we kept."""

HOW = """\
The desired state is benchmarks.peers' (see [RESULTS.md](RESULTS.md), "How each tool expresses
the state"): the repository's desired-state.yaml with the release changed, and for the peers the
unit file, EnvironmentFile and Caddyfile that our renderer writes. Only who is targeted is added:

- **ours**: the same file with `target:` listing the hosts (`ssh://root@10.231.X.2:22`, named
  after the host) and `rollout: {max_unavailable: "25%", concurrency: N}`; `reconcile --once -f
  FILE -i KEY --known-hosts KH`. Every host is observed at once, one connection each; a deploy
  then goes a quarter of the hosts at a time, each batch through its health gates first.
- **pyinfra** (its parallel mode): the same deploy.py, an inventory of the N hosts in groups
  `batch_1` .. `batch_4` (one quarter each), `pyinfra -y --parallel N inventory.py deploy.py
  --data version=V`. pyinfra runs each operation on every host before the next operation, so
  `--parallel` alone would restart all backends in one step: its rolling deploy is one run per
  batch, `--parallel 4 --limit batch_<i>`, each only when the one before succeeded.
- **Ansible** (forks = N, pipelining, ControlPersist, no facts, as on one host): the same play
  with `serial: "{{ batch | default('100%') }}"`: the no-op runs all hosts in one batch, the
  rolling deploy passes `-e batch=25%`, so each quarter runs the whole play (handlers and health
  gate included) before the next. Each run opens its own connections: the ControlPersist masters
  are closed (untimed) before it, like the single-host "ansible" row.

Every host accepts one deploy key (the first host's), as in a real fleet; the known_hosts file
holds all N hosts' keys, checked strictly by every tool."""


def findings(results: FleetResults, rows: list[Row]) -> str:
    """What the profile says, with this run's figures."""
    p = results.profile
    if not p:
        return ""
    sizes = p["sizes"]
    one, many = sizes[min(sizes, key=int)], sizes[max(sizes, key=int)]
    n = max(int(k) for k in sizes)
    return "\n".join(
        [
            "**Findings.**",
            "",
            f"- Wall time of the fleet path: {one['wall_ms']:.0f} ms at 1 host, {many['wall_ms']:.0f} ms "
            f"at {n}; the process's CPU {one['cpu_ms']:.0f} -> {many['cpu_ms']:.0f} ms.",
            f"- SSH connect per host: {one['connect_median_ms']:.0f} ms alone, median "
            f"{many['connect_median_ms']:.0f} ms (slowest {many['connect_max_ms']:.0f} ms) with {n} at once.",
            f"- known_hosts: parsed {many['known_hosts_n']:.0f} times at {n} hosts, "
            f"{many['known_hosts_sum_ms']:.1f} ms in all.",
            f"- GIL: a 1 ms sleep wakes {one['wake_lag_p90_ms']:.2f} ms late (p90) at 1 host, "
            f"{many['wake_lag_p90_ms']:.2f} ms at {n}.",
        ]
    )
