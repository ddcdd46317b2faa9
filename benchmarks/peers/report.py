"""Statistics and benchmarks/RESULTS.md. Pure functions of the collected samples.

A ratio is made only of runs that did what was expected: a tool with a failed run in a phase,
or one left out of timing because it failed the same-state check, gets "failed: <why>" in
place of its ratio, every target that would compare with it says so, and failures() lists
it, which makes the command exit non-zero.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PHASES = {
    "ssh-noop": "No-op over SSH from this machine",
    "local-noop": "No-op on the host itself (local connection, no SSH)",
    "change": "Change run over SSH: flip the release 1.0.0 -> 2.0.0",
}
OURS = "ours"
FLOOR = "paramiko floor"
CHANNEL_KEYS = ("connections", "auths", "sessions", "execs", "subsystems")


@dataclass(frozen=True)
class Row:
    phase: str
    tool: str
    n: int
    median_ms: float
    min_ms: float
    max_ms: float
    ratio: float | None  # tool median / ours median, same phase
    rss_mib: float  # median peak RSS of the largest process
    channels: dict[str, tuple[float, int, int]]  # key -> (median, min, max) per run
    failures: int
    failed: str = ""  # why this row's runs cannot be compared; no ratio then

    @property
    def comparable(self) -> bool:
        return not self.failed and self.n > 0


@dataclass(frozen=True)
class Target:
    what: str
    wanted: str
    measured: str
    met: bool | None  # None: could not be measured in this run
    note: str = ""
    failed: bool = False  # a tool it compares failed: no ratio was made


@dataclass
class Results:
    command: str
    runs: int
    started: str
    finished: str
    machine: dict[str, str]
    host: dict[str, str]
    load_before: str
    load_after: str
    samples: list[dict[str, Any]]
    same_state: list[dict[str, Any]] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    #: Tools not timed in a phase, with why: {"phase", "tool", "why"} (failed the same-state check).
    excluded: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Failure:
    phase: str
    tool: str
    why: str

    def line(self) -> str:
        return f"{self.tool} ({self.phase}): failed: {self.why}"


def _why(group: list[dict[str, Any]]) -> str:
    """Why a group of runs cannot be compared ("" when every run, warm-up included, did what was
    expected): the first failed run's reason, and how many failed."""
    bad = [x for x in group if not x.get("ok", True)]
    if not bad:
        return ""
    timed = [x for x in group if x["run"] >= 0]
    first = bad[0].get("why") or f"reported {bad[0].get('verdict', '?')}"
    count = sum(1 for x in bad if x["run"] >= 0)
    return f"{first} ({count} of {len(timed)} timed runs)" if timed else first


def summarize(samples: Iterable[dict[str, Any]], excluded: Iterable[dict[str, str]] = ()) -> list[Row]:
    """One row per (phase, tool), in the order tools first appear; warm-ups (run < 0) left out
    of the figures, not of the check. `excluded`: tools not timed, one empty failed row each.
    No ratio for a failed row, nor for any row of a phase where ours failed."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    every: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in samples:
        every.setdefault((s["phase"], s["tool"]), []).append(s)
        if s["run"] >= 0:
            groups.setdefault((s["phase"], s["tool"]), []).append(s)
    ours_median = {
        phase: statistics.median(x["wall_s"] for x in group) * 1000
        for (phase, tool), group in groups.items()
        if tool == OURS and not _why(every[(phase, tool)])
    }
    rows = []
    for (phase, tool), group in groups.items():
        walls = [x["wall_s"] * 1000 for x in group]
        median = statistics.median(walls)
        channels: dict[str, tuple[float, int, int]] = {}
        with_channels = [x["channels"] for x in group if x.get("channels") is not None]
        if with_channels:
            for key in CHANNEL_KEYS:
                values = [c.get(key, 0) for c in with_channels]
                channels[key] = (statistics.median(values), min(values), max(values))
        base = ours_median.get(phase)
        failed = _why(every[(phase, tool)])
        rows.append(
            Row(
                phase=phase,
                tool=tool,
                n=len(group),
                median_ms=median,
                min_ms=min(walls),
                max_ms=max(walls),
                ratio=median / base if base and not failed else None,
                rss_mib=statistics.median(x["maxrss_kb"] for x in group) / 1024,
                channels=channels,
                failures=sum(1 for x in group if not x.get("ok", True)),
                failed=failed,
            )
        )
    for x in excluded:
        rows.append(Row(x["phase"], x["tool"], 0, 0.0, 0.0, 0.0, None, 0.0, {}, 0, f"not timed: {x['why']}"))
    return rows


def failures(results: Results) -> list[Failure]:
    """Every tool whose runs cannot be compared, and why: a failed run, a failed same-state
    check (also when that tool was then left out of timing). Non-empty: the command fails."""
    rows = summarize(results.samples, results.excluded)
    out = [Failure(r.phase, r.tool, r.failed) for r in rows if r.failed]
    out += [
        Failure(f"same state, {row['where']}", row["tool"], row.get("why") or "not ok")
        for row in results.same_state
        if not row["ok"]
    ]
    return out


def _find(rows: list[Row], phase: str, tool: str) -> Row | None:
    return next((r for r in rows if r.phase == phase and r.tool == tool), None)


def refused(what: str, wanted: str, *compared: Row | None) -> Target | None:
    """The target line when a row it compares failed: no ratio, the reason instead."""
    for row in compared:
        if row is not None and not row.comparable:
            return Target(what, wanted, f"{row.tool} failed: {row.failed}", None, failed=True)
    return None


def factor_text(factor: float, wanted: float, *, at_least: bool) -> str:
    """A ratio and how far it is from its target: "3.7x (short by 9%)", "1.31x (over by 0.4%)"."""
    if at_least:
        if factor >= wanted:
            return f"{factor:.2f}x"
        short = wanted / factor - 1
        # 3.996x is not "4.00x (short by 0%)": show the digits that make it short.
        shown = f"{factor:.2f}x" if short >= 0.005 else f"{factor:.3f}x"
        return f"{shown} (short by {short:.0%})" if short >= 0.005 else f"{shown} (short by <1%)"
    return f"{factor:.3f}x" + ("" if factor <= wanted else f" (over by {factor / wanted - 1:.1%})")


def faster(what: str, wanted: float, ours: Row | None, peer: Row | None) -> Target:
    """Ours at least `wanted` times faster than peer, or why that cannot be said."""
    want = f">= {wanted:g}x"
    no = refused(what, want, ours, peer)
    if no is not None:
        return no
    if ours is None or peer is None:
        return Target(what, want, "not measured", None)
    factor = peer.median_ms / ours.median_ms
    return Target(what, want, factor_text(factor, wanted, at_least=True), factor >= wanted)


def targets(rows: list[Row], samples: list[dict[str, Any]]) -> list[Target]:
    out: list[Target] = []
    ours = _find(rows, "ssh-noop", OURS)
    for tool, wanted in (("pyinfra", 4.0), ("ansible", 15.0), ("ansible (warm master)", 15.0)):
        out.append(faster(f"SSH no-op: ours faster than {tool}", wanted, ours, _find(rows, "ssh-noop", tool)))
    # Like for like: both over OpenSSH, both reusing a master connection (or both not).
    for mine, theirs in (
        ("ours (openssh, warm master)", "ansible (warm master)"),
        ("ours (openssh)", "ansible"),
    ):
        a, b = _find(rows, "ssh-noop", mine), _find(rows, "ssh-noop", theirs)
        if a and b:
            out.append(faster(f"SSH no-op over OpenSSH: {mine} faster than {theirs}", 15.0, a, b))
    floor = _find(rows, "ssh-noop", FLOOR)
    no = refused("SSH no-op: ours within the paramiko floor", "<= 1.3x", ours, floor)
    if no is not None:
        out.append(no)
    elif ours and floor:
        factor = ours.median_ms / floor.median_ms
        extra = f" (+{ours.median_ms - floor.median_ms:.0f} ms over {floor.median_ms:.0f} ms)"
        out.append(
            Target(
                "SSH no-op: ours within the paramiko floor",
                "<= 1.3x",
                factor_text(factor, 1.3, at_least=False) + extra,
                factor <= 1.3,
            )
        )
    ours_noop = [s for s in samples if s["phase"] == "ssh-noop" and s["tool"] == OURS and s["run"] >= 0]
    if ours_noop:
        pairs = sorted(
            {(s["channels"]["sessions"], s["channels"]["execs"]) for s in ours_noop if s["channels"]}
        )
        out.append(
            Target(
                "SSH no-op: one exec channel for the observation",
                "exactly 1 session, 1 exec, every run",
                ", ".join(f"{a} session(s) / {b} exec(s)" for a, b in pairs),
                pairs == [(1, 1)],
            )
        )
    local = _find(rows, "local-noop", OURS)
    out.append(
        refused("Local no-op on the host: ours", "< 130 ms median", local)
        or Target(
            "Local no-op on the host: ours",
            "< 130 ms median",
            f"{local.median_ms:.0f} ms" if local else "not measured",
            (local.median_ms < 130) if local else None,
        )
    )
    change = [s for s in samples if s["phase"] == "change" and s["tool"] == OURS and s["run"] >= 0]
    if change:
        sessions = sorted({s["channels"]["sessions"] for s in change if s["channels"]})
        out.append(
            Target(
                "Change run: observation + at most 2 more exec round trips",
                "<= 3 sessions (systemd/Caddy work runs inside the agent)",
                ", ".join(f"{n} sessions" for n in sessions),
                max(sessions) <= 3 if sessions else None,
            )
        )
    return out


# --- Markdown ----------------------------------------------------------------------------


def ms(value: float) -> str:
    return f"{value:,.0f}"


def _channel_cell(row: Row, key: str) -> str:
    if key not in row.channels:
        return "–"
    median, low, high = row.channels[key]
    return f"{median:g}" if low == high else f"{median:g} ({low}–{high})"


def table(rows: list[Row], phase: str) -> str:
    with_ssh = phase != "local-noop"
    head = ["tool", "runs", "median ms", "min–max ms", "vs ours", "peak RSS MiB"]
    if with_ssh:
        head += ["TCP conns", "auths", "sessions", "execs", "SFTP"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in (r for r in rows if r.phase == phase):
        cells = [
            row.tool + (f" ({row.failures} unexpected)" if row.failures else ""),
            str(row.n),
            *row_cells(row),
            f"{row.rss_mib:.1f}" if row.n else "–",
        ]
        if with_ssh:
            cells += [_channel_cell(row, k) for k in CHANNEL_KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_cell(row: Row) -> str:
    if row.failed:
        return f"**failed**: {cell(row.failed)}"
    if row.ratio is None:
        return "–"
    return "1.00x" if row.tool == OURS else f"{row.ratio:.2f}x"


def row_cells(row: Row) -> list[str]:
    """median, min–max and the ratio; dashes for a tool that was not timed."""
    if not row.n:
        return ["–", "–", ratio_cell(row)]
    return [ms(row.median_ms), f"{ms(row.min_ms)}–{ms(row.max_ms)}", ratio_cell(row)]


def cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def mark(t: Target) -> str:
    if t.failed:
        return "**failed**"
    return "–" if t.met is None else ("met" if t.met else "**missed**")


def render(results: Results, equivalence: str) -> str:
    rows = summarize(results.samples, results.excluded)
    failed = failures(results)
    parts = [
        "# Benchmark: reconciler vs Ansible vs pyinfra",
        "",
        "Same host, same desired state, same run: a systemd-nspawn test host (tests/testhost) with "
        "real systemd, sshd and Caddy, reached over a veth. Timed runs are interleaved "
        "(A B C A B C ...), each a fresh process as a user would type it, after one untimed "
        "warm-up round per phase, under `flock /tmp/reconciler-bench.lock`.",
        "",
        *reproduce(results.command),
        f"Run: {results.started} – {results.finished}, {results.runs} timed runs per tool and phase; "
        f"load average before {results.load_before}, after {results.load_after} (other people's "
        "tests share this machine).",
        "",
        *machine_table(results),
        "## Targets (ours, same run, same host)",
        "",
        *failed_lines(failed),
        "| target | wanted | measured | |",
        "|---|---|---|---|",
    ]
    for t in targets(rows, results.samples):
        parts.append(f"| {t.what} | {t.wanted} | {cell(t.measured)} | {mark(t)} |")
    for phase, title in PHASES.items():
        if any(r.phase == phase for r in rows):
            parts += ["", f"## {title}", "", table(rows, phase)]
    parts += [
        "",
        "Times are wall-clock from fork to exit of the command (spawned by GNU time, ~1 ms, the "
        "same for every tool). Peak RSS is GNU time's `%M`: the largest single process of the run "
        "(Ansible's forks and ssh processes are not added up). SSH columns are counted per run "
        "from the host's sshd log at `LogLevel DEBUG1`: `Connection from` (TCP connections), "
        "`Accepted publickey` (auths), `server_input_channel_open: ctype session` (sessions), "
        "`request exec` and `request subsystem` (SFTP) lines; a cell shows the median and, when "
        "runs differ, the range.",
    ]
    fallback = sorted({s["tool"] for s in results.samples if "wait4" in s.get("rss_from", "")})
    if fallback:
        parts += [
            "",
            f"Peak RSS of {', '.join(fallback)} came from wait4(), without GNU time: it "
            "includes the RSS of the process that spawned the command.",
        ]
    if results.same_state:
        parts += ["", "## Same state", "", same_state_table(results.same_state)]
    if results.profile:
        parts += ["", "## Where our SSH no-op spends its time", "", _profile(results.profile)]
        parts += [
            "",
            "## Proposals for ours (measured here, not applied)",
            "",
            _proposals(rows, results.profile),
        ]
    parts += ["", "## How each tool expresses the state", "", equivalence.strip()]
    if results.notes:
        parts += ["", "## Notes from this run", "", *(f"- {n}" for n in results.notes)]
    parts += ["", _other_benchmarks()]
    return "\n".join(parts) + "\n"


def machine_table(results: Results) -> list[str]:
    """What the figures were measured on: this machine, the tools' versions, the test host."""
    return [
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in results.machine.items()),
        *(f"| test host {k} | {v} |" for k, v in results.host.items()),
        "",
    ]


def reproduce(command: str) -> list[str]:
    return ["Reproduce (as root, from the repository):", "", "```sh", command, "```", ""]


def failed_lines(failed: list[Failure]) -> list[str]:
    """The refusal, at the top of the targets: which tools failed, and that no ratio was made."""
    if not failed:
        return []
    return [
        "**This run failed**: no ratio is made with a tool whose runs failed, and the command exited "
        "non-zero.",
        "",
        *(f"- {cell(f.line())}" for f in failed),
        "",
    ]


def _section(path: Path, heading: str) -> list[str]:
    """A section of another benchmark's report, its tables and their one-line verdicts; nothing
    when that report or section is missing (that benchmark has not been run here yet)."""
    if not path.exists():
        return []
    body = path.read_text().splitlines()
    if heading not in body:
        return []
    start = body.index(heading) + 1
    end = next((i for i in range(start, len(body)) if body[i].startswith("## ")), len(body))
    kept: list[str] = []
    gap = False
    for line in body[start:end]:
        if line.startswith(("|", "Target:", "Each host beyond", "### ")):
            if gap and kept:
                kept.append("")
            kept.append("#" + line if line.startswith("### ") else line)  # one level down here
            gap = False
        else:
            gap = True
    return kept


def _other_benchmarks() -> str:
    """The other benchmarks' results, each in its own report next to this one; their headline
    tables are repeated here so that every headline figure is in one file."""
    from benchmarks.chaos.report import RESULTS_BULLET, RESULTS_HEADING

    here = Path(__file__).resolve().parent.parent
    lines = [
        "## Other benchmarks",
        "",
        "- [deploy-under-load.md](deploy-under-load.md): requests through Caddy while each strategy "
        "deploys and rolls back (`python -m benchmarks.deploy_load`).",
        "- [watch.md](watch.md): watch mode's latency from a saved file, and the cost of a no-op pass "
        "(`python -m benchmarks.watch_latency`).",
        "- [fleet-peers.md](fleet-peers.md): ours, pyinfra and Ansible on a fleet of 16 hosts: no-op, "
        "cost per extra host, a rolling deploy and its share of health gates, a fleet in watch mode, "
        "what grows with N (`python -m benchmarks.fleet_peers`).",
        "- [fleet.md](fleet.md): no-op time for fleets of 1, 4 and 8 hosts "
        "(`python -m benchmarks.fleet_noop`).",
        RESULTS_BULLET,
    ]
    repeated = [
        ("### Fleet no-op, side by side (from fleet-peers.md)", "fleet-peers.md", "## Fleet no-op"),
        (
            "### Rolling deploy on the fleet (from fleet-peers.md)",
            "fleet-peers.md",
            "## Rolling deploy 1.0.0 -> 2.0.0, 25% of the hosts at a time",
        ),
        (
            "### A fleet in watch mode: the controller's CPU per no-op pass (from fleet-peers.md)",
            "fleet-peers.md",
            "## Watch mode: a no-op pass over the fleet",
        ),
        (
            "### Watch mode: a no-op pass against its floors (from watch.md)",
            "watch.md",
            "## (b) A no-op pass over the held connection",
        ),
        ("### Fleet no-op, ours alone (from fleet.md)", "fleet.md", "# Fleet no-op"),
        (RESULTS_HEADING, "chaos.md", "## Summary"),
    ]
    for title, name, heading in repeated:
        table = _section(here / name, heading)
        if table:
            lines += ["", title, "", *table]
    return "\n".join(lines)


def same_state_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "Host converged by ours at 1.0.0; then each tool ran for real (not a check mode). After each: "
        "ours `--dry-run` exit code, managed files byte-for-byte (type, mode, content, link "
        "target) and the backend's MainPID.",
        "",
        "| where | tool | tool reports | ours --dry-run after | files | backend | |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['where']} | {r['tool']} | {r['verdict']} | exit {r['ours_after']} | "
            f"{'same' if r['files_same'] else 'differ'} | "
            f"{'same process' if r['same_process'] else 'restarted'} | "
            + ("ok |" if r["ok"] else f"**not ok**: {cell(r.get('why', ''))} |")
        )
    return "\n".join(lines)


def _profile(p: dict[str, Any]) -> str:
    trips = p["round_trips"]
    agent = p["agent_parts"]
    lines = [
        "**Imports** (`-X importtime`, self times summed, median of runs): "
        f"ours {p['import_total_ms']:.0f} ms, the paramiko floor {p['floor_import_total_ms']:.0f} ms. "
        "Of ours, `invoke` costs "
        f"{p['invoke_ms']:.0f} ms (cumulative, with `unittest.mock` and `asyncio` that it pulls in): "
        "`paramiko/config.py` imports it eagerly, only to support `Match exec` in ssh_config. "
        "`-X importtime` itself slows imports down; compare the rows with each other.",
        "",
        "| package | ms (self, summed) |",
        "|---|---|",
        *(f"| `{name}` | {ms:.1f} |" for name, ms in p["packages"]),
        "",
        "**Exec round trips on one open connection** (no TCP, no auth; median):",
        "",
        "| exec | ms |",
        "|---|---|",
        *(f"| {name} | {ms:.1f} |" for name, ms in trips.items()),
        "",
        "**Inside the host**, the agent run by its python3 (median): compiling the agent package "
        f"{agent.get('compile', 0):.1f} ms, executing the module (its imports) "
        f"{agent.get('module', 0):.1f} ms, one observation {agent.get('observe', 0):.1f} ms "
        f"(first one {agent.get('observe_first', 0):.1f} ms). A one-shot exec sends the sources "
        "and compiles them on every request (nothing is cached on the host); watch mode keeps one "
        "agent running and pays only the observation.",
        "",
        "Our own modules with the largest import self time: "
        + ", ".join(f"`{name}` {ms:.1f} ms" for name, ms in p.get("modules", []))
        + " (dataclass-heavy: every frozen dataclass `exec`s its generated methods at import).",
        "",
        "**cProfile of one ours run** (median; cProfile inflates Python-heavy steps such as imports):",
        "",
        "| step | cumulative ms |",
        "|---|---|",
        *(f"| {label} | {ms:.1f} |" for label, ms in p["functions"]),
    ]
    return "\n".join(lines)


def _proposals(rows: list[Row], p: dict[str, Any]) -> str:
    """What this benchmark proposed for ours, what became of it, and what this run measured."""
    ours = _find(rows, "ssh-noop", OURS)
    out: list[str] = []
    ab = p.get("invoke_ab", {})
    if "as is" in ab and "invoke kept out" in ab:
        out.append(
            "1. **Keep paramiko from importing `invoke`**: applied "
            "(`reconciler/executors/lean_paramiko.py`; kept when ~/.ssh/config has `Match exec`). "
            "It took ~33-70 ms of every SSH run, a quarter of a no-op. A/B in this run, with the "
            f"change in place: {ab['as is']:.0f} vs {ab['invoke kept out']:.0f} ms."
        )
    trips = p.get("round_trips", {})
    as_sent = trips.get("our agent's observation (as sent by ours)")
    cached = trips.get("the same, agent bytecode cached on the host (proposal, emulated)")
    if as_sent and cached:
        out.append(
            "2. **Cache the agent's bytecode on the host**: not applied. It would save "
            f"{as_sent - cached:.1f} ms per request ({as_sent:.1f} -> {cached:.1f} ms on an open "
            "connection, emulated), but an observation would then write to the host, which it "
            "never does today (bad input and dry runs leave hosts byte-for-byte unchanged)."
        )
    modules = p.get("modules", [])
    if modules:
        out.append(
            "3. **Trim our own import time**: partly applied (the client no longer imports the host "
            "agent on the SSH path; the agent returns its snapshot's fingerprint). What remains: "
            + ", ".join(f"`{name}` ({ms:.1f} ms self)" for name, ms in modules[:3])
            + ", mostly frozen dataclasses built at import."
        )
    cold = _find(rows, "ssh-noop", "ours (openssh)")
    warm = _find(rows, "ssh-noop", "ours (openssh, warm master)")
    if ours and cold and warm and all(r.comparable for r in (ours, cold, warm)):
        out.append(
            "4. **An OpenSSH transport**: applied as `--ssh openssh` (all of ssh_config, and a master "
            f"connection kept 60 s). Measured above: {cold.median_ms:.0f} ms cold, "
            f"{warm.median_ms:.0f} ms with the master up, against {ours.median_ms:.0f} ms with "
            "paramiko. A cold connection is mostly sshd's own per-connection work (re-exec, "
            "privilege separation, PAM), which no client avoids."
        )
    return "\n".join(out) if out else "No profile data."
