"""The whole fleet benchmark: boot, converge, check the same state, time, report."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.fleet_noop import one_deploy_key
from benchmarks.fleet_peers import gates
from benchmarks.fleet_peers import report as fleet_report
from benchmarks.fleet_peers.fleet import ALL, RESULTS_MD, WORK, Fleet
from benchmarks.peers import (
    ansible_side,
    hosttime,
    install,
    machine,
    phases,
    project,
    report,
    samecheck,
    sshlog,
)
from benchmarks.peers.paths import FROM_VERSION, TO_VERSION
from benchmarks.peers.runner import bench_lock, ensure_peers, environ, wait_for_sshd

if TYPE_CHECKING:
    from tests.testhost import TestHost

Say = Callable[[str], None]


@dataclass
class Options:
    hosts: int = 16
    sizes: list[int] = field(default_factory=lambda: [1, 4, 8, 16])
    runs: int = 7  # no-op runs per tool and size
    deploy_runs: int = 3  # rolling deploys per tool
    peers: bool = True
    install: bool = True
    deploy: bool = True
    profile: bool = True
    watch: bool = True
    out: Path = RESULTS_MD
    failed_out: Path = WORK / "RESULTS-failed.md"
    json_out: Path = WORK / "results.json"
    lock_wait: float | None = None
    notes: list[str] = field(default_factory=list)
    args: str = ""


@dataclass
class FleetResults(report.Results):
    """benchmarks.peers' results (samples, same state, excluded: the same refusal rule), and
    what only a fleet has."""

    hosts: int = 0
    sizes: list[int] = field(default_factory=list)
    gates: list[dict[str, Any]] = field(default_factory=list)  # one per rolling run: tool, run, batches
    fleet: dict[str, Any] = field(default_factory=dict)  # memory per host, boot time
    watch: dict[str, Any] = field(default_factory=dict)  # watchfleet.run: a no-op pass per size


def _mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(opts: Options, say: Say = print) -> FleetResults:
    from tests.testhost import boot_many

    WORK.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    peers = ensure_peers(opts.install, opts.notes, say) if opts.peers else []
    say(f"peers: {', '.join(f'{p.name} ({install.PINS[p.name]})' for p in peers) or 'none'}")
    with environ(XDG_CACHE_HOME=str(WORK.parent / "peers" / "xdg-cache")):
        proj = project.build(WORK / "project")
    mem_before = _mem_available_mib()
    t0 = time.monotonic()
    with boot_many(opts.hosts) as hosts:
        booted = time.monotonic() - t0
        say(f"{len(hosts)} test hosts up in {booted:.1f} s: {', '.join(h.name for h in hosts)}")
        info = {"boot_s": round(booted, 1)}
        results = _measure(opts, hosts, proj, {p.name: p for p in peers}, say, info, mem_before)
    results.started, results.finished = started, time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results.machine = machine.this_machine(peers)
    failed = report.failures(results)
    out = opts.failed_out if failed else opts.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(fleet_report.render(results))
    opts.json_out.parent.mkdir(parents=True, exist_ok=True)
    opts.json_out.write_text(json.dumps(results.__dict__, indent=1, default=str) + "\n")
    say(f"wrote {out} and {opts.json_out}")
    return results


def _serves_all(hosts: list[TestHost]) -> Callable[[], str | None]:
    from tests.deploying import serves

    def check() -> str | None:
        seen = set()
        for host in hosts:
            try:
                seen.add(serves(host))
            except (AssertionError, OSError, ValueError):
                seen.add(None)
        return seen.pop() if len(seen) == 1 else f"mixed: {sorted(map(str, seen))}"

    return check


def _measure(
    opts: Options,
    hosts: list[TestHost],
    proj: project.Project,
    peers: dict[str, install.Peer],
    say: Say,
    info: dict[str, Any],
    mem_before: float,
) -> FleetResults:
    from tests.deploying import unit_pid

    n_max = len(hosts)
    sizes = sorted({n for n in opts.sizes if n <= n_max} | {1, n_max})
    one_deploy_key(hosts)
    known_hosts = WORK / "known_hosts"
    known_hosts.write_text("".join(h.known_hosts.read_text() for h in hosts))
    control_dir = ansible_side.make_control_dir()
    fleet = Fleet(hosts, hosts[0].key_path, known_hosts, proj.root, control_dir)
    fleet.write_inputs(sizes)
    for host in hosts:
        sshlog.enable_debug(host)
    for host in hosts:
        wait_for_sshd(host.address)
    try:
        converge = fleet.ours(n_max, batch=ALL)
        for version in (TO_VERSION, FROM_VERSION):  # both releases uploaded, 1.0.0 serving
            result = hosttime.run_timed(
                converge.argv(version), env=converge.env, cwd=converge.cwd, timeout=900
            )
            if result["rc"] != 0:
                raise RuntimeError(
                    f"ours failed to converge the fleet at {version}:\n{phases.tail_text(result)}"
                )
            say(f"  converged {n_max} hosts at {version} with ours in {result['wall_s']:.1f} s")
        info["mem_per_host_mib"] = round((mem_before - _mem_available_mib()) / n_max, 1)
        say(f"  memory: {info['mem_per_host_mib']} MiB per host (MemAvailable before and after)")

        dry = fleet.ours(n_max, dry_run=True)
        unit = proj.app + "-backend.service"

        def backend_pids() -> tuple[int, ...]:
            return tuple(unit_pid(h, unit) for h in hosts)

        said = []
        if "pyinfra" in peers:
            said.append(fleet.pyinfra(n_max, peers["pyinfra"]))
        if "ansible" in peers:
            said.append(fleet.ansible(n_max, peers["ansible"]))
        say(f"same-state check on {n_max} hosts:")
        same = samecheck.run(hosts, dry, said, [], backend_pids, say)
        if not same[0].ok:
            raise RuntimeError(f"ours plans changes on the fleet it has just converged: {same[0].why}")

        excluded: list[dict[str, str]] = []
        noop_tools: dict[int, list[Any]] = {}
        for n in sizes:
            candidates = [fleet.ours(n)]
            if "pyinfra" in peers:
                candidates.append(fleet.pyinfra(n, peers["pyinfra"]))
            if "ansible" in peers:
                candidates.append(fleet.ansible(n, peers["ansible"]))
            noop_tools[n], out = samecheck.left_out(same, "ssh", f"noop@{n}", candidates)
            excluded += out
        rolling = [fleet.ours(n_max, keep_output=True)]
        if "pyinfra" in peers:
            rolling.append(fleet.pyinfra_rolling(n_max, peers["pyinfra"]))
        if "ansible" in peers:
            rolling.append(fleet.ansible(n_max, peers["ansible"], rolling=True))
        rolling, out = samecheck.left_out(same, "ssh", "rolling", rolling)
        if opts.deploy:
            excluded += out
        for x in excluded:
            say(f"  not timing {x['tool']} ({x['phase']}): {x['why']}")

        samples: list[phases.Sample] = []
        gate_rows: list[dict[str, Any]] = []
        prof: dict[str, Any] | None = None
        load_before = machine.loadavg()

        def quiet_sshd() -> None:
            """sshd back at its default LogLevel: DEBUG1 costs each connection ~6 ms of the
            host's CPU (profile.host_cpu_breakdown), and the hosts share this machine's cores."""
            for host in hosts:
                sshlog.disable_debug(host)
            for host in hosts:
                wait_for_sshd(host.address)

        def loud_sshd() -> None:
            for host in hosts:
                sshlog.enable_debug(host)
            for host in hosts:
                wait_for_sshd(host.address)

        with bench_lock(opts.lock_wait, say):
            say(
                f"fleet no-op ({opts.runs} runs per tool and size, interleaved; sessions counted in warm-up):"
            )
            for run in range(-1, opts.runs):
                if run == 0:
                    quiet_sshd()
                for n in sizes:
                    for tool in noop_tools[n]:
                        sample = phases.timed_ssh_run(
                            hosts[:n], tool, FROM_VERSION, f"noop@{n}", run, "unchanged", count=run < 0
                        )
                        samples.append(sample)
                        say(phases.line(sample))
            watch: dict[str, Any] = {}
            if opts.watch:
                from benchmarks.fleet_peers import watchfleet

                loud_sshd()  # sshd counts the channels the passes open
                say("watch mode, in-process, a no-op pass per fleet size:")
                watch = watchfleet.run(fleet, sizes, say)
                quiet_sshd()
            if opts.deploy:
                batches = [[h.name for h in b] for b in fleet.batches(n_max)]
                say(f"rolling deploy {FROM_VERSION} -> {TO_VERSION}, {len(batches[0])} hosts at a time:")

                def after_each(sample: phases.Sample) -> None:
                    if sample.tool == "ours":
                        per_host = gates.ours_gates(sample.output)
                        seen = gates.ours_batches(sample.output) or batches
                    else:
                        per_host, seen = gates.peer_gates(hosts), batches
                    gate_rows.append(
                        {
                            "tool": sample.tool,
                            "run": sample.run,
                            "wall_s": sample.wall_s,
                            "batches": gates.per_batch(per_host, seen),
                            "hosts_gated": sum(1 for v in per_host.values() if v > 0),
                        }
                    )
                    sample.output = ""  # parsed; the JSON keeps the figures, not the text

                gates.clear(hosts)
                loud_sshd()  # to count the warm-up's sessions
                samples += phases.change(
                    hosts,
                    rolling,
                    fleet.ours(n_max, batch=ALL),
                    dry,
                    _serves_all(hosts),
                    opts.deploy_runs,
                    say,
                    phase="rolling",
                    after_each=after_each,
                    quiet_sshd=quiet_sshd,
                )
            if opts.profile:
                from benchmarks.fleet_peers import profile

                say("profiling ours' fleet path (in-process, instrumented)")
                prof = profile.run(fleet, sizes, [x.as_dict() for x in samples], say)
        load_after = machine.loadavg()
        return FleetResults(
            command=f".venv/bin/python -m benchmarks.fleet_peers {opts.args or f'--runs {opts.runs}'}",
            runs=opts.runs,
            started="",
            finished="",
            machine={},
            host=machine.test_host(hosts[0]),
            load_before=load_before,
            load_after=load_after,
            samples=[s.as_dict() for s in samples],
            same_state=[row.as_dict() for row in same],
            profile=prof,
            notes=opts.notes,
            excluded=excluded,
            hosts=n_max,
            sizes=sizes,
            gates=gate_rows,
            fleet=info,
            watch=watch,
        )
    finally:
        fleet.close_masters()
        shutil.rmtree(control_dir, ignore_errors=True)
