"""Smoke test of benchmarks/peers: its pure parts, and a tiny run of our side plus the floor.

No timing is asserted anywhere: timings on this shared 2-core machine are the benchmark's
business (python -m benchmarks.peers). The tiny run leaves Ansible and pyinfra out (their
install takes minutes) and checks that every phase runs, counts SSH channels from the host's
sshd log and renders a report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.peers import ansible_side, hosttime, project, report, samecheck, sshlog, tools
from benchmarks.peers.profile import by_package, importtime_entries, parse_importtime
from benchmarks.peers.runner import refuse
from tests.conftest import BenchRun

SSHD_LINES = """\
Connection from 10.231.2.1 port 34290 on 10.231.2.2 port 22 rdomain ""
debug1: userauth-request for user root service ssh-connection method publickey [preauth]
Accepted publickey for root from 10.231.2.1 port 34290 ssh2: ED25519 SHA256:f6FP6bahJFdu03
debug1: server_input_channel_open: ctype session rchan 0 win 2097152 max 32768
debug1: server_input_channel_open: confirm session
debug1: server_input_channel_req: channel 0 request exec reply 1
debug1: session_input_channel_req: session 0 req exec
debug1: server_input_channel_open: ctype session rchan 1 win 2097152 max 32768
debug1: server_input_channel_req: channel 1 request subsystem reply 1
""".splitlines()


def test_sshd_lines_are_counted_by_kind() -> None:
    counted = sshlog.count(SSHD_LINES)
    assert counted == sshlog.Channels(connections=1, auths=1, sessions=2, execs=1, subsystems=1)


def test_verdicts_of_each_tool() -> None:
    assert tools.ours_verdict(0, "No changes: the host matches the desired state.") == "unchanged"
    assert tools.ours_verdict(0, "Converged: 6 actions applied") == "changed"
    assert tools.ours_verdict(1, "error") == "failed"
    recap = "testhost                   : ok=7    changed=0    unreachable=0    failed=0    skipped=3"
    assert tools.ansible_verdict(0, recap) == "unchanged"
    assert tools.ansible_verdict(0, recap.replace("changed=0", "changed=3")) == "changed"
    assert tools.ansible_verdict(2, recap.replace("failed=0", "failed=1")) == "failed"
    assert tools.ansible_verdict(0, "no recap at all") == "failed"
    assert tools.pyinfra_verdict(0, "    Grand total      10      -         -       10") == "unchanged"
    assert tools.pyinfra_verdict(0, "    Grand total      14      10        -       4") == "changed"
    assert tools.pyinfra_verdict(0, "    Grand total      14      9         1       4") == "failed"
    assert tools.pyinfra_verdict(0, "no table") == "failed"


def test_ours_left_alone_reads_a_whole_fleets_plan() -> None:
    """After a peer's change ours may only gate and record; a fleet's plan is read host by host,
    and a plan cut short (as a kept tail of its output would be) is not taken for agreement."""
    bookkeeping = [
        {"action": "health-check", "target": "http://127.0.0.1:8080/health", "reason": "x" * 150},
        {"action": "record-good", "target": "2.0.0", "reason": "y" * 80},
    ]
    fleet = {"hosts": {f"h{i}": {"actions": bookkeeping} for i in range(16)}}
    text = json.dumps(fleet, indent=2)
    assert len(text) > hosttime.TAIL, "the case that failed: longer than the kept tail"
    assert tools.ours_plans_only_bookkeeping(2, text)
    assert not tools.ours_plans_only_bookkeeping(2, text[-hosttime.TAIL :])
    fleet["hosts"]["h7"]["actions"] = [*bookkeeping, {"action": "restart", "target": "u", "reason": ""}]
    assert not tools.ours_plans_only_bookkeeping(2, json.dumps(fleet))
    assert tools.ours_plans_only_bookkeeping(0, "")


def test_desired_state_changes_only_version_and_artifact() -> None:
    template = (Path(__file__).resolve().parent.parent / "desired-state.yaml").read_text()
    text = project.desired_text("2.0.0", template)
    changed = [(a, b) for a, b in zip(template.splitlines(), text.splitlines(), strict=True) if a != b]
    assert len(changed) == 2
    assert '"2.0.0"' in changed[0][1]
    assert "dist/choiros-2.0.0.tar.gz" in changed[1][1]


def test_importtime_keeps_top_level_imports_only() -> None:
    stderr = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       100 |        100 |   paramiko.util\n"
        "import time:      1000 |       5000 | paramiko\n"
        "import time:       200 |       2500 | reconciler.cli\n"
    )
    assert parse_importtime(stderr) == {"paramiko": 5.0, "reconciler.cli": 2.5}
    assert by_package(importtime_entries(stderr)) == {"paramiko": 1.1, "reconciler": 0.2}


def test_ansible_inventory_pins_the_host_key(tmp_path: Path) -> None:
    text = ansible_side.inventory("10.0.0.2", tmp_path / "key", tmp_path / "known_hosts")
    assert "StrictHostKeyChecking=yes" in text and f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in text
    cfg = ansible_side.ansible_cfg("/tmp/bench-cp-x", ssh=True)
    assert "pipelining = True" in cfg and "ControlPersist" in cfg and "gathering = explicit" in cfg


def test_control_sockets_get_a_folder_short_enough_wherever_the_checkout_is(tmp_path: Path) -> None:
    deep = tmp_path / ("clone-" + "x" * 60) / "benchmarks" / ".work" / "peers" / "project" / "host" / "cp"
    with pytest.raises(RuntimeError, match="too long for a Unix socket"):
        ansible_side.ansible_cfg(deep, ssh=True)
    folder = ansible_side.make_control_dir()
    try:
        assert len(str(folder)) + 1 + ansible_side.CONTROL_NAME_LEN <= ansible_side.SUN_PATH_MAX
        assert f"control_path_dir = {folder}" in ansible_side.ansible_cfg(folder, ssh=True)
        assert "forks = 16" in ansible_side.ansible_cfg(folder, ssh=True, forks=16)
    finally:
        folder.rmdir()


def _sample(phase: str, tool: str, run: int, wall: float, sessions: int | None) -> dict[str, object]:
    channels = None
    if sessions is not None:
        channels = {"connections": 1, "auths": 1, "sessions": sessions, "execs": sessions, "subsystems": 0}
    return {
        "phase": phase,
        "tool": tool,
        "run": run,
        "wall_s": wall,
        "maxrss_kb": 40_000,
        "rc": 0,
        "verdict": "unchanged",
        "channels": channels,
        "ok": True,
    }


def test_report_renders_tables_ratios_and_targets() -> None:
    samples = [
        _sample("ssh-noop", "ours", -1, 9.9, 1),  # a warm-up: left out
        *(_sample("ssh-noop", "ours", i, 0.3, 1) for i in range(3)),
        *(_sample("ssh-noop", "pyinfra", i, 1.2, 14) for i in range(3)),
        *(_sample("ssh-noop", "paramiko floor", i, 0.25, 1) for i in range(3)),
        *(_sample("local-noop", "ours", i, 0.1, None) for i in range(3)),
        *(_sample("change", "ours", i, 1.9, 2) for i in range(3)),
    ]
    rows = report.summarize(samples)
    ours = next(r for r in rows if r.phase == "ssh-noop" and r.tool == "ours")
    assert ours.n == 3 and ours.median_ms == pytest.approx(300)
    pyinfra = next(r for r in rows if r.tool == "pyinfra")
    assert pyinfra.ratio == pytest.approx(4.0) and pyinfra.channels["sessions"] == (14, 14, 14)
    by_what = {t.what: t for t in report.targets(rows, samples)}
    assert by_what["SSH no-op: ours faster than pyinfra"].met is True
    assert by_what["SSH no-op: ours faster than ansible"].met is None  # not measured
    assert report.factor_text(3.996, 4.0, at_least=True) == "3.996x (short by <1%)"
    assert report.factor_text(3.7, 4.0, at_least=True) == "3.70x (short by 8%)"
    assert by_what["SSH no-op: one exec channel for the observation"].met is True
    results = report.Results(
        command="python -m benchmarks.peers",
        runs=3,
        started="t0",
        finished="t1",
        machine={"CPU": "x"},
        host={"OS": "y"},
        load_before="0 0 0",
        load_after="0 0 0",
        samples=samples,
    )
    text = report.render(results, "equivalence notes")
    assert "| pyinfra | 3 | 1,200 |" in text
    assert "## Change run over SSH" in text and "equivalence notes" in text
    results.profile = {
        "import_total_ms": 120.0,
        "floor_import_total_ms": 100.0,
        "packages": [["paramiko", 9.0]],
        "invoke_ms": 25.0,
        "functions": [["plan (pure)", 0.5]],
        "round_trips": {
            "`true`": 3.0,
            "our agent's observation (as sent by ours)": 45.0,
            "the same, agent bytecode cached on the host (proposal, emulated)": 37.0,
        },
        "agent_parts": {"compile": 7.0, "module": 9.0, "observe": 8.0, "observe_first": 9.0},
        "modules": [["reconciler.plan.actions", 6.8]],
        "invoke_ab": {"as is": 300.0, "invoke kept out": 270.0},
    }
    text = report.render(results, "")
    assert "## Proposals for ours" in text
    assert "300 vs 270 ms" in text, "the invoke A/B is reported"
    assert "save 8.0 ms per request (45.0 -> 37.0 ms" in text, "the bytecode-cache emulation is reported"


ANSIBLE_UNREACHABLE = """\
fatal: [testhost]: UNREACHABLE! => {"changed": false, "msg": "Task failed: Data could not be sent to \
remote host \\"10.231.2.2\\". Make sure this host can be reached over ssh: unix_listener: path \
\\"/tmp/clone/benchmarks/.work/peers/project/host/cp/cc9f8a5191e0.NcttsEcYqL5kJtDZ\\" too long for Unix \
domain socket", "unreachable": true}

PLAY RECAP *********************************************************************
testhost                   : ok=0    changed=0    unreachable=1    failed=0    skipped=0
"""


def test_why_a_run_failed_is_said_in_the_tools_own_words() -> None:
    verdict = tools.ansible_verdict(4, ANSIBLE_UNREACHABLE)
    assert verdict == "failed"
    why = tools.why_failed(verdict, "unchanged", 4, ANSIBLE_UNREACHABLE)
    assert why.startswith("exit 4: Task failed: Data could not be sent")
    assert "too long for Unix domain socket" in why
    assert tools.why_failed("changed", "unchanged", 0, "") == "reported changed, expected unchanged"
    assert tools.why_failed("failed", "unchanged", 1, "x\nerror: host key of h CHANGED\n") == (
        "exit 1: host key of h CHANGED"
    )


def _failed(sample: dict[str, object], why: str) -> dict[str, object]:
    return {**sample, "ok": False, "verdict": "failed", "rc": 4, "why": why}


def test_a_peer_whose_runs_failed_gets_no_ratio_and_fails_the_run() -> None:
    why = "exit 4: unix_listener: path too long for Unix domain socket"
    samples = [
        *(_sample("ssh-noop", "ours", i, 0.3, 1) for i in range(3)),
        *(_sample("ssh-noop", "pyinfra", i, 1.2, 14) for i in range(3)),
        # Failed runs are fast: a ratio made of them (2.6x here) would be a lie.
        *(_failed(_sample("ssh-noop", "ansible", i, 0.78, 0), why) for i in range(3)),
    ]
    rows = report.summarize(samples)
    ansible = next(r for r in rows if r.tool == "ansible")
    assert ansible.ratio is None and not ansible.comparable
    assert ansible.failed == f"{why} (3 of 3 timed runs)"
    by_what = {t.what: t for t in report.targets(rows, samples)}
    refused = by_what["SSH no-op: ours faster than ansible"]
    assert refused.failed and refused.met is None and "too long" in refused.measured
    assert by_what["SSH no-op: ours faster than pyinfra"].met is True  # the others still compare
    results = report.Results("cmd", 3, "t0", "t1", {}, {}, "0", "0", samples)
    failed = report.failures(results)
    assert [(f.phase, f.tool) for f in failed] == [("ssh-noop", "ansible")]
    text = report.render(results, "")
    assert "**This run failed**" in text
    assert "| ansible (3 unexpected) | 3 | 780 | 780–780 | **failed**: exit 4:" in text
    assert "2.60x" not in text
    assert refuse(failed) == 1
    assert refuse(report.failures(report.Results("cmd", 3, "t0", "t1", {}, {}, "0", "0", samples[:6]))) == 0


def test_a_failed_warm_up_alone_still_refuses_the_ratio() -> None:
    samples = [
        _failed(_sample("ssh-noop", "ansible", -1, 0.8, 0), "exit 4: unreachable"),
        *(_sample("ssh-noop", "ours", i, 0.3, 1) for i in range(2)),
        *(_sample("ssh-noop", "ansible", i, 3.0, 19) for i in range(2)),
    ]
    ansible = next(r for r in report.summarize(samples) if r.tool == "ansible")
    assert ansible.ratio is None and ansible.failed.startswith("exit 4: unreachable")


def test_when_ours_failed_no_tool_gets_a_ratio() -> None:
    samples = [
        *(_failed(_sample("ssh-noop", "ours", i, 0.1, 0), "exit 1: cannot reach") for i in range(2)),
        *(_sample("ssh-noop", "pyinfra", i, 1.2, 14) for i in range(2)),
    ]
    rows = report.summarize(samples)
    assert all(r.ratio is None for r in rows)
    target = report.targets(rows, samples)[0]
    assert target.failed and target.measured.startswith("ours failed: exit 1: cannot reach")


def test_a_peer_failing_the_same_state_check_is_not_timed_and_fails_the_run() -> None:
    rows = [
        samecheck.Row("ssh", "ours --dry-run", "unchanged", 0, True, True),
        samecheck.Row("ssh", "pyinfra", "unchanged", 0, True, True),
        samecheck.Row("ssh", "ansible", "failed", 0, True, True, "exit 4: too long for Unix domain socket"),
        samecheck.Row("local", "ansible", "unchanged", 0, True, True),
    ]
    assert rows[2].why == "exit 4: too long for Unix domain socket"
    assert samecheck.Row("ssh", "x", "unchanged", 2, False, False).why == (
        "ours --dry-run exit 2 after it; managed files changed; the backend restarted"
    )

    def tool(name: str) -> tools.Tool:
        return tools.Tool(name, lambda v: [v], tools.ours_verdict)

    kept, excluded = samecheck.left_out(
        rows,
        "ssh",
        "ssh-noop",
        [tool("ours"), tool("pyinfra"), tool("ansible"), tool("ansible (warm master)")],
    )
    assert [t.name for t in kept] == ["ours", "pyinfra"]
    assert [x["tool"] for x in excluded] == ["ansible", "ansible (warm master)"]
    samples = [*(_sample("ssh-noop", "ours", i, 0.3, 1) for i in range(2))]
    results = report.Results(
        "cmd", 2, "t0", "t1", {}, {}, "0", "0", samples, [r.as_dict() for r in rows], excluded=excluded
    )
    failed = report.failures(results)
    assert {(f.phase, f.tool) for f in failed} == {
        ("ssh-noop", "ansible"),
        ("ssh-noop", "ansible (warm master)"),
        ("same state, ssh", "ansible"),
    }
    text = report.render(results, "")
    assert "| ansible | 0 | – | – | **failed**: not timed: same-state check: exit 4:" in text
    assert "**not ok**: exit 4: too long for Unix domain socket |" in text


@pytest.mark.slow
@pytest.mark.testhost
def test_tiny_run_of_our_side_and_the_floor(tmp_path: Path, small_benchmark: BenchRun) -> None:
    from benchmarks.peers.runner import Options, run

    opts = Options(
        runs=1,
        peers=False,
        profile=False,
        out=tmp_path / "RESULTS.md",
        json_out=tmp_path / "results.json",
        project_dir=tmp_path / "project",
    )
    results, lines = small_benchmark(run, opts)
    timed = [s for s in results.samples if s["run"] >= 0]
    assert {(s["phase"], s["tool"]) for s in timed} == {
        ("ssh-noop", "ours"),
        ("ssh-noop", "ours (openssh)"),
        ("ssh-noop", "ours (openssh, warm master)"),
        ("ssh-noop", "paramiko floor"),
        ("ssh-noop", "OpenSSH floor"),
        ("ssh-noop", "OpenSSH floor (curve25519-sha256)"),
        ("local-noop", "ours"),
        ("change", "ours"),
    }
    assert all(s["ok"] for s in results.samples), "\n".join(lines)
    for s in timed:
        if s["phase"] != "local-noop":
            # a reused master connection opens no new connection, only sessions on the old one
            assert s["channels"]["connections"] >= (0 if "warm master" in s["tool"] else 1)
            assert s["channels"]["sessions"] >= 1
    assert all(row["ok"] for row in results.same_state)
    text = opts.out.read_text()
    assert "## No-op over SSH from this machine" in text and "| paramiko floor |" in text
