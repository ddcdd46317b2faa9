"""Smoke test of benchmarks/fleet_peers: its pure parts, and a tiny run of our side on two hosts.

No timing is asserted: timings on this shared 2-core machine are the benchmark's business
(python -m benchmarks.fleet_peers). What is checked: the fleet's inputs, how each tool's
output is read, the gate share, and the refusal rule (no ratio, cost or share from a tool
whose runs failed; the command fails).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.fleet_peers import gates
from benchmarks.fleet_peers import report as fleet_report
from benchmarks.fleet_peers.fleet import batch_size, fleet_desired_text
from benchmarks.fleet_peers.runner import FleetResults
from benchmarks.peers import ansible_side, project, pyinfra_side, report, tools
from benchmarks.peers.runner import refuse
from tests.conftest import BenchRun

OURS_ROLLING = """\
[rth1] choiros 2.0.0 (symlink-swap) on rth1: observed in 212 ms
-- batch 1/2: rth1
[rth1]   ok 4/7 restart choiros-backend.service (35 ms)
[rth1]   ok 5/7 health-check http://127.0.0.1:8080/health (1.3 s)
-- batch 2/2: rth2
[rth2]   ok 5/7 health-check http://127.0.0.1:8080/health (980 ms)
Summary:
  rth1  converged       serves 2.0.0
  rth2  converged       serves 2.0.0
"""


def test_the_fleet_desired_state_targets_every_host_and_rolls_out_a_quarter_at_a_time() -> None:
    template = (Path(__file__).resolve().parent.parent / "desired-state.yaml").read_text()
    base = project.desired_text("2.0.0", template)
    hosts = [("rth1", "ssh://root@10.231.1.2:22"), ("rth2", "ssh://root@10.231.2.2:22")]
    text = fleet_desired_text(base, hosts, "25%", 2)
    assert (
        "target:\n  - {target: ssh://root@10.231.1.2:22, name: rth1}\n  - {target: ssh://root@10.231.2.2:22"
        in text
    )
    assert text.endswith('rollout:\n  max_unavailable: "25%"\n  concurrency: 2\n')
    assert "target: local" not in text
    assert [batch_size(n) for n in (1, 4, 8, 16, 32)] == [1, 1, 2, 4, 8]


def test_each_tool_is_given_the_same_fleet() -> None:
    text = ansible_side.fleet_inventory([("rth1", "10.0.0.2"), ("rth2", "10.0.0.3")], Path("k"), Path("kh"))
    assert text.count("ansible_ssh_private_key_file=k ") == 2 and text.startswith("[web]\nrth1 ")
    play = ansible_side.fleet_playbook_text()
    assert "  hosts: all\n  serial: \"{{ batch | default('100%') }}\"\n" in play
    inventory = pyinfra_side.fleet_inventory([["10.0.0.2"], ["10.0.0.3"]], Path("k"), Path("kh"))
    groups: dict[str, Any] = {}
    exec(inventory, groups)  # an inventory.py is Python
    assert [h for h, _ in groups["batch_1"]] == ["10.0.0.2"] and [h for h, _ in groups["batch_2"]] == [
        "10.0.0.3"
    ]
    assert pyinfra_side.command("/v/bin", "/p", "1.0.0", "inv.py", ("--parallel", "4"))[:4] == [
        "/v/bin/pyinfra",
        "-y",
        "--parallel",
        "4",
    ]


def test_every_host_counts_in_each_tools_verdict() -> None:
    assert tools.ours_fleet_verdict(0, OURS_ROLLING) == "changed"
    noop = "Summary:\n  rth1  noop            serves 1.0.0\n  rth2  noop            serves 1.0.0\n"
    assert tools.ours_fleet_verdict(0, noop) == "unchanged"
    assert tools.ours_fleet_verdict(1, noop.replace("rth2  noop  ", "rth2  failed")) == "failed"
    assert tools.ours_fleet_verdict(0, "No changes: the host matches the desired state.") == "unchanged"
    recap = "rth1 : ok=7 changed=0 unreachable=0 failed=0\nrth2 : ok=7 changed=2 unreachable=0 failed=0\n"
    assert tools.ansible_verdict(0, recap) == "changed"
    assert tools.ansible_verdict(0, recap.replace("changed=2", "changed=0")) == "unchanged"
    assert tools.ansible_verdict(
        2, recap.replace("unreachable=0 failed=0\nrth2", "unreachable=1 failed=0\nrth2")
    ) == ("failed")
    batches = "    Grand total  14  4  -  10\n...\n    Grand total  14  -  -  14\n"
    assert tools.pyinfra_verdict(0, batches) == "changed"
    assert tools.pyinfra_verdict(0, batches.replace("14  -  -  14", "14  -  1  13")) == "failed"


def test_gates_are_read_where_they_ran() -> None:
    assert gates.ours_gates(OURS_ROLLING) == {"rth1": 1.3, "rth2": 0.98}
    assert gates.ours_batches(OURS_ROLLING) == [["rth1"], ["rth2"]]
    assert gates.parse_gate_log("100.000 101.250 0\n200.000 200.500 0\n") == pytest.approx(1.75)
    assert gates.per_batch({"a": 1.0, "b": 1.5, "c": 1.2}, [["a", "b"], ["c", "d"]]) == [1.5, 1.2]


def _sample(phase: str, tool: str, run: int, wall: float, ok: bool = True) -> dict[str, Any]:
    sample: dict[str, Any] = {
        "phase": phase,
        "tool": tool,
        "run": run,
        "wall_s": wall,
        "maxrss_kb": 40_000,
        "rc": 0 if ok else 4,
        "verdict": "unchanged" if ok else "failed",
        "channels": {"connections": 1, "auths": 1, "sessions": 1, "execs": 1, "subsystems": 0},
        "ok": ok,
        "cpu_s": 0.1,
        "host_cpu_s": 0.2,
    }
    if not ok:
        sample["why"] = "exit 4: unreachable"
    return sample


def _results(samples: list[dict[str, Any]], gate_rows: list[dict[str, Any]]) -> FleetResults:
    return FleetResults(
        command="python -m benchmarks.fleet_peers",
        runs=2,
        started="t0",
        finished="t1",
        machine={},
        host={},
        load_before="0",
        load_after="0",
        samples=samples,
        hosts=16,
        sizes=[1, 16],
        gates=gate_rows,
        fleet={"mem_per_host_mib": 30.0, "boot_s": 5.0},
    )


def test_report_makes_targets_marginal_cost_and_gate_share() -> None:
    samples = [
        *(_sample("noop@1", "ours", i, 0.30) for i in range(2)),
        *(_sample("noop@16", "ours", i, 0.60) for i in range(2)),
        *(_sample("noop@1", "pyinfra", i, 1.2) for i in range(2)),
        *(_sample("noop@16", "pyinfra", i, 3.0) for i in range(2)),
        *(_sample("rolling", "ours", i, 8.0) for i in range(2)),
    ]
    gate_rows = [
        {"tool": "ours", "run": i, "wall_s": 8.0, "batches": [1.5] * 4, "hosts_gated": 16} for i in range(2)
    ]
    results = _results(samples, gate_rows)
    rows = report.summarize(samples)
    assert fleet_report.marginal(rows, "ours", 16) == pytest.approx((300.0, 600.0, 20.0))
    by_what = {t.what: t for t in fleet_report.targets(results, rows)}
    assert by_what["Fleet no-op, 16 hosts: ours faster than pyinfra"].met is True  # 5x
    assert by_what["Fleet no-op, 16 hosts: ours faster than ansible"].measured == "not measured"
    cost = by_what["Fleet no-op: ours' cost per extra host, (T(N) - T(1)) / (N - 1)"]
    assert cost.met is True and cost.measured.startswith("20.0 ms")
    share = by_what["Rolling deploy, 16 hosts, 25% at a time: ours' time is health gates"]
    assert share.met is True and share.measured.startswith("75% (6.0 s of 8.0 s)")
    text = fleet_report.render(results)
    assert "| 16 | pyinfra | 2 | 3,000 | 3,000–3,000 | 5.00x |" in text
    assert "| ours | 300 | 600 | 20.0 |" in text
    assert refuse(report.failures(results)) == 0


def test_a_failed_peer_gets_no_ratio_no_marginal_cost_and_fails_the_command() -> None:
    samples = [
        *(_sample("noop@1", "ours", i, 0.30) for i in range(2)),
        *(_sample("noop@16", "ours", i, 0.60) for i in range(2)),
        *(_sample("noop@1", "ansible", i, 3.0) for i in range(2)),
        *(_sample("noop@16", "ansible", i, 0.9, ok=False) for i in range(2)),  # fast, because failed
    ]
    results = _results(samples, [])
    rows = report.summarize(samples)
    assert (
        fleet_report.marginal(rows, "ansible", 16)
        == "ansible failed: exit 4: unreachable (2 of 2 timed runs)"
    )
    target = next(t for t in fleet_report.targets(results, rows) if "faster than ansible" in t.what)
    assert target.failed and target.met is None
    text = fleet_report.render(results)
    assert "**This run failed**" in text
    assert "| 16 | ansible | 2 | 900 | 900–900 | **failed**: exit 4: unreachable" in text
    assert "| ansible | – | – | **failed**: ansible failed: exit 4:" in text
    assert refuse(report.failures(results)) == 1


@pytest.mark.slow
@pytest.mark.testhost
def test_tiny_fleet_run_of_our_side(tmp_path: Path, small_benchmark: BenchRun) -> None:
    from benchmarks.fleet_peers.runner import Options, run

    opts = Options(
        hosts=2,
        sizes=[1, 2],
        runs=1,
        deploy_runs=1,
        peers=False,
        profile=False,
        out=tmp_path / "fleet.md",
        failed_out=tmp_path / "fleet-failed.md",
        json_out=tmp_path / "results.json",
    )
    results, lines = small_benchmark(run, opts)
    assert all(s["ok"] for s in results.samples), "\n".join(lines)
    timed = {(s["phase"], s["tool"]) for s in results.samples if s["run"] >= 0}
    assert timed == {("noop@1", "ours"), ("noop@2", "ours"), ("rolling", "ours")}
    warm_up = {s["phase"]: s for s in results.samples if s["run"] < 0}
    assert warm_up["noop@2"]["channels"]["connections"] == 2, "one connection per host"
    timed_noop = next(s for s in results.samples if s["phase"] == "noop@2" and s["run"] >= 0)
    assert timed_noop["channels"] is None, "timed with sshd at its default LogLevel: not counted"
    assert timed_noop["host_cpu_s"] > 0, "the hosts' CPU is read from their cgroups"
    ours_gates = [g for g in results.gates if g["tool"] == "ours" and g["run"] >= 0]
    assert ours_gates and len(ours_gates[0]["batches"]) == 2 and all(b > 0 for b in ours_gates[0]["batches"])
    assert all(row["ok"] for row in results.same_state)
    watch = {row["hosts"]: row for row in results.watch["rows"]}
    assert sorted(watch) == [1, 2]
    assert watch[2]["warm_up_channels"]["connections"] == 2, "sshd counted the watcher connecting"
    assert watch[2]["channels"]["connections"] == 0 and watch[2]["channels"]["execs"] == 0, (
        "a resident agent per host: no-op passes open nothing"
    )
    assert all(cpu > 0 for cpu in watch[2]["cpu_ms"]), "each pass is timed on the CPU clock"
    report = opts.out.read_text()
    assert "## Fleet no-op" in report and "## Watch mode: a no-op pass over the fleet" in report
