"""Smoke test of benchmarks/peers: its pure parts, and a tiny run of our side plus the floor.

No timing is asserted anywhere: timings on this shared 2-core machine are the benchmark's
business (python -m benchmarks.peers). The tiny run leaves Ansible and pyinfra out (their
install takes minutes) and checks that every phase runs, counts SSH channels from the host's
sshd log and renders a report.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.peers import ansible_side, project, report, sshlog, tools
from benchmarks.peers.profile import by_package, importtime_entries, parse_importtime

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


@pytest.mark.slow
@pytest.mark.testhost
def test_tiny_run_of_our_side_and_the_floor(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("test hosts need root")
    from benchmarks.peers.runner import Options, run

    opts = Options(
        runs=1,
        peers=False,
        profile=False,
        out=tmp_path / "RESULTS.md",
        json_out=tmp_path / "results.json",
        project_dir=tmp_path / "project",
        lock_wait=0,  # a real benchmark is timing: do not disturb it, skip instead
    )
    lines: list[str] = []
    try:
        results = run(opts, lines.append)
    except TimeoutError:
        pytest.skip("another benchmark holds /tmp/reconciler-bench.lock")
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
