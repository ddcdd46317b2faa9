"""The prose of benchmarks/fleet-peers.md: how each tool is set up, why this many hosts, and
what the profile of ours' fleet path found (its figures filled in from the run)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from benchmarks.peers.report import Row

if TYPE_CHECKING:
    from benchmarks.fleet_peers.runner import FleetResults

WHY_HOSTS = """\
{n} hosts, the fleet size the targets are set for. Memory would hold far more: each host took
{mem} MiB here (MemAvailable before boot and after the fleet was converged), so 23.5 GiB holds
hundreds; the {n} booted in {boot} s. The two cores are the limit. The hosts' sshd and the agent
(or the peers' modules) run on the same 2 cores as the tools: at {n} hosts ours' no-op used
{host_cpu:.0f} ms of CPU inside the hosts against {client_cpu:.0f} ms of its own, which keeps both
cores busy for most of the run. Every host beyond that adds its CPU to every tool's time, so a
larger fleet would measure this machine more than the tools, and slow down the other people's
tests that share it."""

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


def _ours_cpu(results: FleetResults) -> tuple[float, float] | None:
    """Ours at the largest fleet, medians: CPU ms each host used, and CPU ms ours itself used per
    extra host ((CPU(N) - CPU(1)) / (N - 1))."""
    from benchmarks.fleet_peers.report import noop_phase
    from benchmarks.peers.report import OURS

    def median(phase: str, key: str) -> float | None:
        values = sorted(
            s[key] for s in results.samples if s["phase"] == phase and s["tool"] == OURS and s["run"] >= 0
        )
        return values[len(values) // 2] if values else None

    n = results.hosts
    host, cpu_n, cpu_1 = (
        median(noop_phase(n), "host_cpu_s"),
        median(noop_phase(n), "cpu_s"),
        median(noop_phase(1), "cpu_s"),
    )
    if host is None or cpu_n is None or cpu_1 is None or n < 2:
        return None
    return host * 1000 / n, (cpu_n - cpu_1) * 1000 / (n - 1)


def findings(results: FleetResults, rows: list[Row]) -> str:
    """What the profile says, with this run's figures, and what was done about it."""
    p = results.profile
    if not p:
        return ""
    sizes = p["sizes"]
    one, many = sizes[min(sizes, key=int)], sizes[max(sizes, key=int)]
    n = max(int(k) for k in sizes)
    host = p.get("host_cpu", {})
    sshd = host.get("sshd alone: `true`", 0.0)
    python = host.get("`python3 -c pass`", 0.0)
    debug = host.get("sshd alone: `true`, at LogLevel DEBUG1 (to count sessions)", 0.0)
    per_host, client = _ours_cpu(results) or (p.get("ours_host_cpu_per_host_ms", 0.0), 0.0)
    parse = p["known_hosts_parse_ms"]
    lines = [
        "**Findings.** What grows with N, in the order of its size:",
        "",
        f"1. **The hosts' CPU.** A no-op of ours costs each host {per_host:.0f} ms of CPU: sshd alone "
        f"(`ssh HOST true`) {sshd:.0f} ms, python3 starting {python - sshd:.0f} ms more, and the agent "
        f"itself (decompress, compile, import, observe) the remaining "
        f"~{max(per_host - python, 0):.0f} ms. Here all hosts share the 2 cores with the client, so "
        f"each extra host costs about ({per_host:.0f} + {client:.0f}) / 2 = "
        f"{(per_host + client) / 2:.0f} ms of wall time: at {n} hosts the run is CPU-bound, which "
        f"is why the agent's answer takes {one['agent_median_ms']:.0f} ms at 1 host and "
        f"{many['agent_median_ms']:.0f} ms at {n}, and each SSH connect {one['connect_median_ms']:.0f} "
        f"-> {many['connect_median_ms']:.0f} ms. On a real fleet every host has its own CPU and this "
        "part does not add up.",
        f"2. **Handshakes and the GIL, in ours' process.** Its CPU grows by {client:.1f} ms per host "
        f"(in the probe, without start-up and imports: {one['cpu_ms']:.0f} -> {many['cpu_ms']:.0f} ms): "
        "paramiko's key exchange and "
        f"authentication, reading the agent's answer, planning. Two threads per host (a worker and "
        f"paramiko's transport; {many['threads_max']:.0f} alive at {n} hosts) share one GIL: a thread "
        f"waking from a 1 ms sleep is {one['wake_lag_p90_ms']:.2f} ms late (p90) at 1 host, "
        f"{many['wake_lag_p90_ms']:.2f} ms at {n}, and the hosts' observations start "
        f"{many.get('plan_host_start_spread_ms', 0):.0f} ms apart, first to last.",
        f"3. **known_hosts reads.** Every connection reads the whole file again: {n} parses of "
        f"{p['known_hosts_lines']} lines, {parse:.2f} ms each alone, {many['known_hosts_cpu_sum_ms']:.1f} ms "
        f"of CPU in all at {n} hosts. It grows as N²: ~{parse * 4 * 64:,.0f} ms at 64 hosts, "
        f"~{parse * 16 * 256:,.0f} ms at 256.",
        f"4. **Not growing:** the agent is compressed once per run ({many['agent_blob_computed']:.0f} at "
        f"{n} hosts), closing the connections takes {many['close_ms']:.0f} ms, and the fleet engine "
        f"ends {many['fleet_ms'] - many['plan_host_max_ms']:.0f} ms after its slowest host.",
        "",
        "**What was changed, and what was not.** Nothing in reconciler/engine/fleet.py grows with N "
        "beyond one worker thread per host. Two changes there were tried and measured (16 hosts, 11 "
        "interleaved runs each, on 2026-11-30, load average 14-21): starting every worker thread before "
        "any host's work (776 vs 785 ms for the fleet engine, start spread 59 vs 58 ms) and creating "
        "every host's executor before the workers start (736 vs 739 ms): no difference beyond the "
        "noise, so neither was kept. The observations start apart because 2N threads take turns at the "
        "GIL, not because of how the engine starts them. The benchmark itself no longer times with "
        f"sshd at LogLevel DEBUG1 (it cost every connection {debug - sshd:.0f} ms of the host's CPU).",
        "",
        "**Proposed, not applied** (measured here, each with what it would save):",
        "",
        f"- Parse known_hosts once per process for a fleet's connections: "
        f"{many['known_hosts_cpu_sum_ms'] - parse:.1f} ms of CPU less at {n} hosts, which is why it "
        "is not done yet; it grows as N², so a fleet of hundreds would want it.",
        "- Cut the agent's CPU on the host, the largest term here: cache its bytecode on the host "
        "(RESULTS.md measures ~7-9 ms less per request; it would make an observation write to the "
        "host). Starting python3 with -S "
        f"saves nothing measurable ({host.get('`python3 -S -c pass` (no site module)', 0.0):.0f} vs "
        f"{python:.0f} ms).",
    ]
    return "\n".join(lines)


def reading_targets(results: FleetResults, rows: list[Row], marginal_of: Callable[[str], object]) -> str:
    """What the two scaling targets ask of each host's CPU, on a machine where all hosts share
    two cores with the tool (figures of this run)."""
    from benchmarks.peers.report import OURS

    p = results.profile or {}
    n = results.hosts
    ours, peer, cpu = marginal_of(OURS), marginal_of("pyinfra"), _ours_cpu(results)
    host = p.get("host_cpu", {})
    sshd = host.get("sshd alone: `true`", 0.0)
    python = host.get("`python3 -c pass`", 0.0)
    if not isinstance(ours, tuple) or not isinstance(peer, tuple) or cpu is None or not sshd:
        return ""
    per_host, client = cpu
    t1, tn_peer = ours[0], peer[1]
    needed = (tn_peer / 4 - t1) / (n - 1)  # ms per extra host for ours to be 4x faster than pyinfra
    allowed = 2 * needed - client  # each host's CPU that would leave
    return "\n".join(
        [
            "**Reading the two scaling targets.** Both ask what each extra host may cost, and on this "
            "machine a host's CPU is the tool's time: the hosts share its 2 cores with the tool. Ours "
            f"costs each host {per_host:.0f} ms of CPU and itself {client:.1f} ms more per host, so an "
            f"extra host takes about ({per_host:.0f} + {client:.1f}) / 2 = {(per_host + client) / 2:.0f} ms "
            f"of the two cores; the run measured {ours[2]:.1f} ms.",
            f"- *<= 25 ms per extra host* leaves each host 2 x 25 - {client:.0f} = {50 - client:.0f} ms of "
            f"CPU; sshd (`ssh HOST true`) and starting python3 take {python:.0f} ms of it, leaving "
            f"{50 - client - python:.0f} ms for the agent, which uses ~{per_host - python:.0f} ms.",
            f"- *>= 4x pyinfra at {n} hosts*: pyinfra took {tn_peer:,.0f} ms, so ours would have to finish "
            f"in {tn_peer / 4:,.0f} ms: {needed:.1f} ms per extra host after its {t1:.0f} ms for one, which "
            f"leaves each host 2 x {needed:.1f} - {client:.1f} = {allowed:.0f} ms of CPU"
            + (
                f", less than sshd alone takes ({sshd:.0f} ms): not reachable on this machine with one SSH "
                "connection per host, whatever runs in it."
                if allowed < sshd
                else "."
            ),
            "",
            "On a real fleet each host's CPU is its own, and what is left per host is ours' "
            f"{client:.1f} ms. The agent's share is the part that is ours to cut (proposals below).",
        ]
    )
