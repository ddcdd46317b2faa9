"""benchmarks/fleet-peers.md, from the collected samples. Pure functions, like the peers' report,
and under its rule: no ratio, marginal cost or share is made of a tool whose runs failed."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from benchmarks.peers import report
from benchmarks.peers.report import OURS, Row, Target, cell, ms

if TYPE_CHECKING:
    from benchmarks.fleet_peers.runner import FleetResults

TOOLS = ("ours", "pyinfra", "ansible")


def noop_phase(n: int) -> str:
    return f"noop@{n}"


def _row(rows: list[Row], phase: str, tool: str) -> Row | None:
    return next((r for r in rows if r.phase == phase and r.tool == tool), None)


def _median_of(samples: list[dict[str, Any]], phase: str, tool: str, key: str) -> float:
    values = [s[key] for s in samples if s["phase"] == phase and s["tool"] == tool and s["run"] >= 0]
    return statistics.median(values) if values else 0.0


def marginal(rows: list[Row], tool: str, n: int) -> tuple[float, float, float] | str | None:
    """(T(1), T(N), (T(N) - T(1)) / (N - 1)) in ms; a reason when a run failed; None: not measured."""
    one, many = _row(rows, noop_phase(1), tool), _row(rows, noop_phase(n), tool)
    for row in (one, many):
        if row is not None and not row.comparable:
            return f"{tool} failed: {row.failed}"
    if one is None or many is None or n < 2:
        return None
    return one.median_ms, many.median_ms, (many.median_ms - one.median_ms) / (n - 1)


def gate_shares(results: FleetResults) -> dict[str, dict[str, float]]:
    """Per tool, medians over its rolling runs: wall s, gate s (sum of each batch's longest gate)
    and the gates' share of the wall time."""
    out: dict[str, dict[str, float]] = {}
    for tool in TOOLS:
        rows = [g for g in results.gates if g["tool"] == tool and g["run"] >= 0]
        if not rows:
            continue
        shares = [sum(g["batches"]) / g["wall_s"] for g in rows]
        out[tool] = {
            "wall_s": statistics.median(g["wall_s"] for g in rows),
            "gate_s": statistics.median(sum(g["batches"]) for g in rows),
            "share": statistics.median(shares),
            "batches": statistics.median(len(g["batches"]) for g in rows),
            "hosts_gated": statistics.median(g["hosts_gated"] for g in rows),
        }
    return out


def targets(results: FleetResults, rows: list[Row]) -> list[Target]:
    n = results.hosts
    phase = noop_phase(n)
    ours = _row(rows, phase, OURS)
    out = [
        report.faster(
            f"Fleet no-op, {n} hosts: ours faster than pyinfra", 4.0, ours, _row(rows, phase, "pyinfra")
        ),
        report.faster(
            f"Fleet no-op, {n} hosts: ours faster than ansible", 15.0, ours, _row(rows, phase, "ansible")
        ),
    ]
    what, wanted = "Fleet no-op: ours' cost per extra host, (T(N) - T(1)) / (N - 1)", "<= 25 ms"
    m = marginal(rows, OURS, n)
    if isinstance(m, str):
        out.append(Target(what, wanted, m, None, failed=True))
    elif m is None:
        out.append(Target(what, wanted, "not measured", None))
    else:
        out.append(
            Target(what, wanted, f"{m[2]:.1f} ms ({ms(m[0])} ms at 1 host, {ms(m[1])} ms at {n})", m[2] <= 25)
        )
    rolling = _row(rows, "rolling", OURS)
    what, wanted = f"Rolling deploy, {n} hosts, 25% at a time: ours' time is health gates", "> 50% of it"
    shares = gate_shares(results)
    refused = report.refused(what, wanted, rolling)
    if refused is not None:
        out.append(refused)
    elif OURS in shares:
        s = shares[OURS]
        out.append(
            Target(
                what,
                wanted,
                f"{s['share']:.0%} ({s['gate_s']:.1f} s of {s['wall_s']:.1f} s)",
                s["share"] > 0.5,
            )
        )
    else:
        out.append(Target(what, wanted, "not measured", None))
    return out


def _channels(samples: list[dict[str, Any]], phase: str, tool: str, key: str) -> str:
    """Counted where they were counted: the warm-up round, sshd at DEBUG1 (the timed runs run
    with sshd's default LogLevel)."""
    values = [
        s["channels"][key] for s in samples if s["phase"] == phase and s["tool"] == tool and s.get("channels")
    ]
    if not values:
        return "–"
    median, low, high = statistics.median(values), min(values), max(values)
    return f"{median:g}" if low == high else f"{median:g} ({low}–{high})"


def noop_table(results: FleetResults, rows: list[Row]) -> str:
    lines = [
        "| hosts | tool | runs | median ms | min–max ms | vs ours | CPU here ms | CPU in the hosts ms "
        "| TCP conns | sessions |",
        "|---:|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for n in results.sizes:
        phase = noop_phase(n)
        for row in (r for r in rows if r.phase == phase):
            cpu = _median_of(results.samples, phase, row.tool, "cpu_s") * 1000
            host_cpu = _median_of(results.samples, phase, row.tool, "host_cpu_s") * 1000
            lines.append(
                f"| {n} | {row.tool} | {row.n} | "
                + " | ".join(report.row_cells(row))
                + (f" | {cpu:,.0f} | {host_cpu:,.0f}" if row.n else " | – | –")
                + f" | {_channels(results.samples, phase, row.tool, 'connections')}"
                + f" | {_channels(results.samples, phase, row.tool, 'sessions')} |"
            )
    return "\n".join(lines)


def marginal_table(results: FleetResults, rows: list[Row]) -> str:
    n = results.hosts
    lines = [
        f"| tool | T(1) ms | T({n}) ms | per extra host ms | CPU here per extra host ms "
        "| CPU in the hosts per host ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for tool in TOOLS:
        m = marginal(rows, tool, n)
        if m is None:
            continue
        if isinstance(m, str):
            lines.append(f"| {tool} | – | – | **failed**: {cell(m)} | – | – |")
            continue
        cpu1 = _median_of(results.samples, noop_phase(1), tool, "cpu_s") * 1000
        cpun = _median_of(results.samples, noop_phase(n), tool, "cpu_s") * 1000
        host = _median_of(results.samples, noop_phase(n), tool, "host_cpu_s") * 1000 / n
        lines.append(
            f"| {tool} | {ms(m[0])} | {ms(m[1])} | {m[2]:.1f} | {(cpun - cpu1) / (n - 1):.1f} | {host:.1f} |"
        )
    return "\n".join(lines)


def rolling_table(results: FleetResults, rows: list[Row]) -> str:
    shares = gate_shares(results)
    lines = [
        "| tool | runs | median s | vs ours | health gates s | gates' share | the rest s | sessions |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in (r for r in rows if r.phase == "rolling"):
        s = shares.get(row.tool)
        if row.comparable and s:
            figures = f"{s['gate_s']:.1f} | {s['share']:.0%} | {s['wall_s'] - s['gate_s']:.1f}"
        else:
            figures = "– | – | –"
        median = f"{row.median_ms / 1000:.1f}" if row.n else "–"
        lines.append(
            f"| {row.tool} | {row.n} | {median} | {report.ratio_cell(row)} | {figures} | "
            f"{_channels(results.samples, 'rolling', row.tool, 'sessions')} |"
        )
    return "\n".join(lines)


def profile_section(results: FleetResults) -> str:
    p = results.profile
    if not p:
        return "Not profiled in this run (`--no-profile`)."
    sizes = p["sizes"]
    keys = [
        ("wall, the CLI's main() (imports excluded)", "wall_ms", "{:.0f}"),
        ("CPU of the process", "cpu_ms", "{:.0f}"),
        ("threads alive at most", "threads_max", "{:.0f}"),
        ("SSH connect per host (TCP, kex, auth), median", "connect_median_ms", "{:.0f}"),
        ("SSH connect, slowest host", "connect_max_ms", "{:.0f}"),
        ("SSH connect, CPU of its threads, all hosts", "connect_cpu_sum_ms", "{:.0f}"),
        ("known_hosts parses (one per connection)", "known_hosts_n", "{:.0f}"),
        ("known_hosts parsing, all hosts", "known_hosts_sum_ms", "{:.1f}"),
        ("open the session channel, median", "session_median_ms", "{:.0f}"),
        ("agent's answer, median", "agent_median_ms", "{:.0f}"),
        ("agent's answer, slowest host", "agent_max_ms", "{:.0f}"),
        ("observe + plan per host, median", "plan_host_median_ms", "{:.0f}"),
        ("observe + plan, slowest host", "plan_host_max_ms", "{:.0f}"),
        ("observe + plan: first host's start to last host's", "plan_host_start_spread_ms", "{:.1f}"),
        ("the fleet engine (reconcile_fleet), all hosts", "fleet_ms", "{:.0f}"),
        ("closing the connections (Executors.close)", "close_ms", "{:.0f}"),
        ("times the agent was compressed (functools.cache)", "agent_blob_computed", "{:.0f}"),
        ("a 1 ms sleep wakes late by, p90", "wake_lag_p90_ms", "{:.2f}"),
        ("a 1 ms sleep wakes late by, max", "wake_lag_max_ms", "{:.1f}"),
    ]
    head = "| ms (median of {} runs) | ".format(p["runs"]) + " | ".join(f"{n} hosts" for n in sizes) + " |"
    lines = [head, "|---|" + "---:|" * len(sizes)]
    for label, key, fmt in keys:
        lines.append(
            f"| {label} | " + " | ".join(fmt.format(sizes[n].get(key, float("nan"))) for n in sizes) + " |"
        )
    lines += [
        "",
        f"The fleet's known_hosts ({p['known_hosts_lines']} lines) takes "
        f"{p['known_hosts_parse_ms']:.2f} ms to parse once with the reader every connection uses "
        "(reconciler/executors/known_hosts.py).",
    ]
    return "\n".join(lines)


def watch_section(results: FleetResults) -> str:
    w = results.watch
    if not w:
        return "Not measured in this run (`--no-watch`)."
    lines = [
        "| hosts | passes | wall per pass, median / p95 ms | controller CPU per pass, median / p95 ms "
        "| CPU per pass per host ms | new connections | exec channels | warm-up pass: connections, execs |",
        "|---:|---:|---|---|---:|---:|---:|---|",
    ]
    for r in w["rows"]:
        ch = r["channels"]
        lines.append(
            f"| {r['hosts']} | {r['passes']} | {r['wall_median_ms']} / {r['wall_p95_ms']} | "
            f"{r['cpu_median_ms']} / {r['cpu_p95_ms']} | {r['cpu_per_host_ms']} | "
            f"{ch['connections']} | {ch['execs']} | "
            f"{r['warm_up_channels']['connections']}, {r['warm_up_channels']['execs']} |"
        )
    rows = w["rows"]
    if len(rows) > 1 and rows[-1]["hosts"] > rows[0]["hosts"]:
        first, last = rows[0], rows[-1]
        extra = (last["cpu_median_ms"] - first["cpu_median_ms"]) / (last["hosts"] - first["hosts"])
        lines += ["", f"Each host beyond the first adds {extra:.2f} ms of the controller's CPU to a pass."]
    lines += [
        "",
        "The engine's own `Watcher` in this process, as `reconcile --watch` builds it (one resident "
        f"agent per host on the connection it keeps), {w['passes']} no-op passes per fleet size, "
        f"{w['pace_s']} s apart, after one untimed pass that connects. CPU is this process's user + "
        "system time over the pass, all its threads (the fleet's workers and paramiko's transports); "
        "children's CPU (git runs only for passes that change something): "
        + ", ".join(f"{r['child_cpu_ms']} ms at {r['hosts']}" for r in rows)
        + ". Connections and exec channels are counted by every host's sshd (LogLevel DEBUG1) over "
        "the timed passes: 0 and 0 mean every pass was one request on the channel already open; the "
        "warm-up pass, counted the same way, shows what opening them costs (and that the count works).",
    ]
    return "\n".join(lines)


def render(results: FleetResults, extra: str = "") -> str:
    from benchmarks.fleet_peers.text import HOW, WHY_HOSTS, findings, reading_targets

    rows = report.summarize(results.samples, results.excluded)
    failed = report.failures(results)
    n = results.hosts
    parts = [
        "# Fleet benchmark: reconciler vs pyinfra vs Ansible",
        "",
        f"{n} test hosts (systemd-nspawn containers with systemd, sshd, Caddy, each its own veth), the "
        "same desired state for every tool, the same run. No-op runs are interleaved across tools "
        f"and fleet sizes ({', '.join(map(str, results.sizes))} hosts), each a fresh process as a "
        "user types it, after one untimed warm-up round; medians. Then a rolling deploy "
        "1.0.0 -> 2.0.0, a quarter of the hosts at a time, for each tool in turn, the fleet reset "
        "to 1.0.0 by ours (untimed) before each run.",
        "",
        *report.reproduce(results.command),
        f"Run: {results.started} – {results.finished}; load average before {results.load_before}, after "
        f"{results.load_after}. **Other people's tests shared this 2-core machine during the run**: "
        "read the figures as this run's, not as the tools' best.",
        "",
        *report.machine_table(results),
        "## How many hosts, and why",
        "",
        WHY_HOSTS.format(
            n=n,
            mem=results.fleet.get("mem_per_host_mib", "?"),
            boot=results.fleet.get("boot_s", "?"),
            host_cpu=_median_of(results.samples, noop_phase(n), OURS, "host_cpu_s") * 1000,
            client_cpu=_median_of(results.samples, noop_phase(n), OURS, "cpu_s") * 1000,
        ),
        "",
        "## Targets (same run)",
        "",
        *report.failed_lines(failed),
        "| target | wanted | measured | |",
        "|---|---|---|---|",
        *(
            f"| {t.what} | {t.wanted} | {cell(t.measured)} | {report.mark(t)} |"
            for t in targets(results, rows)
        ),
        "",
        reading_targets(results, rows, lambda tool: marginal(rows, tool, n)),
        "",
        "## Fleet no-op",
        "",
        noop_table(results, rows),
        "",
        '"CPU here" is the command\'s own user + system time (with the children it waited for: '
        "Ansible's forks and ssh clients); \"CPU in the hosts\" is what all the hosts' cgroups used "
        "meanwhile (sshd, the agent or the peers' Python modules, systemd). Both come out of the same "
        "2 cores. TCP connections and sessions are counted from every host's sshd log in the warm-up "
        "round, with sshd at LogLevel DEBUG1; the timed runs run with sshd's default LogLevel, as "
        "DEBUG1 costs the hosts CPU on every connection (see the profile below).",
        "",
        "### Cost per extra host",
        "",
        marginal_table(results, rows),
        "",
        "## Rolling deploy 1.0.0 -> 2.0.0, 25% of the hosts at a time",
        "",
        rolling_table(results, rows),
        "",
        'A batch is done when its slowest host passed its health gate: "health gates" is the sum over '
        "batches of the longest gate in each (ours: the agent's `health-check` action, from its "
        'output; the peers: health_gate.py, which logs when it ran on the host). "The rest" is the '
        "tool: start-up, connections, looking at the hosts, copying, restarting, Caddy. After every "
        "run every host must serve 2.0.0 and ours must plan nothing for 2.0.0. The gates have the same "
        "rule but do not start at the same moment: ours' starts as soon as the restart returns, the "
        "peers' only after they uploaded and started health_gate.py, by when the backend has had part "
        "of its start-up; so the same start-up counts as gate for ours and as the tool for the peers, "
        "and ours' share is, if anything, the larger for it.",
        "",
        "## Watch mode: a no-op pass over the fleet",
        "",
        watch_section(results),
        "",
        "## Same state",
        "",
        report.same_state_table(results.same_state).replace(
            "Host converged by ours at 1.0.0", f"All {n} hosts converged by ours at 1.0.0"
        ),
        "",
        "## What grows with N in ours' fleet path",
        "",
        profile_section(results),
        "",
        findings(results, rows),
        "",
        "## How each tool is set up",
        "",
        HOW.strip(),
    ]
    if extra:
        parts += ["", extra]
    if results.notes:
        parts += ["", "## Notes from this run", "", *(f"- {note}" for note in results.notes)]
    return "\n".join(parts) + "\n"
