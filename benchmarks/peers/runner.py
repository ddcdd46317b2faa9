"""The whole benchmark: install, boot, converge, check the same state, time, report."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.peers import (
    ansible_side,
    equivalence,
    hosttime,
    install,
    machine,
    phases,
    profile,
    project,
    report,
    samecheck,
    sshlog,
    tools,
)
from benchmarks.peers.paths import FROM_VERSION, LOCK_FILE, RESULTS_MD, TO_VERSION, WORK

if TYPE_CHECKING:
    from tests.testhost import TestHost

Say = Callable[[str], None]
PEER_NAMES = ("pyinfra", "ansible")


@dataclass
class Options:
    runs: int = 9
    peers: bool = True  # include Ansible and pyinfra at all
    install: bool = True  # may pip-install them (else: only if already in benchmarks/.work)
    change: bool = True  # the change-run phase
    profile: bool = True
    out: Path = RESULTS_MD
    failed_out: Path = WORK / "RESULTS-failed.md"  # the report when a tool failed (exit non-zero)
    json_out: Path = WORK / "results.json"
    project_dir: Path = WORK / "project"
    lock_wait: float | None = None  # seconds to wait for the bench lock; None: as long as it takes
    notes: list[str] = field(default_factory=list)
    args: str = ""  # the command line options, for the report's "reproduce" line


@contextlib.contextmanager
def bench_lock(wait: float | None, say: Say) -> Iterator[None]:
    """flock on /tmp/reconciler-bench.lock: timed runs of different benchmarks never overlap."""
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for {LOCK_FILE} (another benchmark is timing)")
            deadline = None if wait is None else time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"{LOCK_FILE} still held after {wait:g} s") from None
                    time.sleep(0.5)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ensure_peers(allow_install: bool, notes: list[str], say: Say) -> list[install.Peer]:
    """The pinned peers, pip-installed in benchmarks/.work when missing and allowed."""
    found = []
    for name in PEER_NAMES:
        try:
            peer = install.ensure_local(name, allow_install=allow_install)
        except install.InstallError as exc:
            if allow_install:
                raise
            say(f"skipping {name}: {exc}")
            peer = None
        if peer is None:
            notes.append(f"{name} was not installed in benchmarks/.work, so it was left out of this run")
            say(f"skipping {name}: not installed (run without --quick to install it)")
        else:
            found.append(peer)
    return found


def _stage_share(host: TestHost, proj: project.Project) -> None:
    """The project (without its .git) and the timing helper, where the host sees them (/share)."""
    dest = host.share / "project"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(proj.root, dest, ignore=shutil.ignore_patterns(".git", "host"))
    bench = host.share / "bench"
    bench.mkdir(exist_ok=True)
    shutil.copy2(Path(hosttime.__file__), bench / "hosttime.py")
    # GNU time measures peak RSS there too (the host has no `time` package; the binary needs
    # only libc, and this machine runs the same Debian release as the host).
    if Path(hosttime.GNU_TIME).exists():
        shutil.copy2(hosttime.GNU_TIME, bench / "time")


def wait_for_sshd(address: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((address, 22), timeout=1) as sock:
            if sock.recv(64).startswith(b"SSH-"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"sshd on {address} does not answer after reloading its config")


def _serves(host: TestHost) -> Callable[[], str | None]:
    from tests.deploying import serves

    def check() -> str | None:
        try:
            return serves(host)
        except (AssertionError, OSError, ValueError):
            return None

    return check


def _converge(ours: tools.Tool, version: str, say: Say) -> None:
    result = hosttime.run_timed(ours.argv(version), env=ours.env, cwd=ours.cwd, timeout=300)
    if result["rc"] != 0:
        raise RuntimeError(f"ours failed to converge {version}:\n{result['stdout']}\n{result['stderr']}")
    say(f"  converged {version} with ours in {result['wall_s']:.1f} s")


def refuse(failed: list[report.Failure]) -> int:
    """Exit status of a run: 1, and why on stderr, when any tool failed (no ratio was made)."""
    for failure in failed:
        print(f"FAILED {failure.line()}", file=sys.stderr)
    if failed:
        print("no ratio was made with a failed tool; the report says why", file=sys.stderr)
    return 1 if failed else 0


def load_saved(results_json: Path) -> report.Results:
    """The results of an earlier run, from the results.json it wrote."""
    return report.Results(**json.loads(results_json.read_text()))


@dataclass
class Measured:
    samples: list[phases.Sample]
    same_state: list[samecheck.Row]
    profile: profile.Profile | None
    load_before: str
    load_after: str
    host_info: dict[str, str]
    excluded: list[dict[str, str]]


def run(opts: Options, say: Say = print) -> report.Results:
    from tests.testhost import boot

    WORK.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    peers = ensure_peers(opts.install, opts.notes, say) if opts.peers else []
    say(f"peers: {', '.join(f'{p.name} ({install.PINS[p.name]})' for p in peers) or 'none'}")
    # Rendering loads the desired-state files in this process: its schema-verdict cache goes
    # where ours' runs keep theirs, and this process's environment is left as it was.
    with environ(XDG_CACHE_HOME=str(WORK / "xdg-cache")):
        proj = project.build(opts.project_dir)
    say(f"project: {proj.root}")
    with boot() as host:
        say(f"test host {host.name} at {host.address}")
        measured = _measure(opts, host, proj, {p.name: p for p in peers}, say)
    results = report.Results(
        # The command as a reader types it: the project's venv from `bash .ci/setup`.
        command=f".venv/bin/python -m benchmarks.peers {opts.args or f'--runs {opts.runs}'}",
        runs=opts.runs,
        started=started,
        finished=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        machine=machine.this_machine(peers),
        host=measured.host_info,
        load_before=measured.load_before,
        load_after=measured.load_after,
        samples=[s.as_dict() for s in measured.samples],
        same_state=[row.as_dict() for row in measured.same_state],
        profile=measured.profile.as_dict() if measured.profile else None,
        notes=opts.notes,
        excluded=measured.excluded,
    )
    failed = report.failures(results)
    # A failed run's report says why, but never replaces the results of a run that succeeded.
    out = opts.failed_out if failed else opts.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.render(results, equivalence.TEXT))
    opts.json_out.parent.mkdir(parents=True, exist_ok=True)
    opts.json_out.write_text(json.dumps(results.__dict__, indent=1, default=str) + "\n")
    say(f"wrote {out} and {opts.json_out}")
    return results


def _measure(
    opts: Options, host: TestHost, proj: project.Project, peers: dict[str, install.Peer], say: Say
) -> Measured:
    from tests.deploying import unit_pid

    control_dir = ansible_side.make_control_dir()
    target = tools.Target(
        host.address, host.key_path, host.known_hosts, proj.root, proj.root / "host", control_dir
    )
    tools.write_inventories(target)
    _stage_share(host, proj)
    if peers:
        say("installing the peers inside the host (offline, from a wheelhouse made here)")
        install.install_in_host(host, host.share, list(peers))
    sshlog.enable_debug(host)
    wait_for_sshd(host.address)

    ours, dry, floor = tools.ours_ssh(target), tools.ours_ssh(target, dry_run=True), tools.floor_ssh(target)
    ssh_peers, local_tools = [], [tools.ours_local()]
    if "pyinfra" in peers:
        ssh_peers.append(tools.pyinfra_ssh(target, peers["pyinfra"]))
        local_tools.append(tools.pyinfra_local(peers["pyinfra"]))
    if "ansible" in peers:
        ssh_peers.append(tools.ansible_ssh(target, peers["ansible"]))
        local_tools.append(tools.ansible_local(peers["ansible"]))
    noop_tools = [
        ours,
        tools.ours_ssh(target, openssh="cold"),
        tools.ours_ssh(target, openssh="warm"),
        *ssh_peers,
    ]
    if "ansible" in peers:
        noop_tools.append(tools.ansible_ssh(target, peers["ansible"], warm=True))
    noop_tools += [floor, tools.openssh_floor(target), tools.openssh_floor(target, kex="curve25519-sha256")]

    try:
        # Ours uploads both releases, then leaves 1.0.0 serving with `previous` -> 2.0.0.
        _converge(ours, TO_VERSION, say)
        _converge(ours, FROM_VERSION, say)
        say("same-state check:")

        def backend_pid() -> int:
            return unit_pid(host, proj.app + "-backend.service")

        same = samecheck.run([host], dry, ssh_peers, local_tools[1:], backend_pid, say)
        if not same[0].ok:
            raise RuntimeError(f"ours plans changes on the host it has just converged: {same[0].why}")
        noop_tools, out_noop = samecheck.left_out(same, "ssh", "ssh-noop", noop_tools)
        local_tools, out_local = samecheck.left_out(same, "local", "local-noop", local_tools)
        ssh_peers, out_change = samecheck.left_out(same, "ssh", "change", ssh_peers)
        excluded = out_noop + out_local + (out_change if opts.change else [])
        for x in excluded:
            say(f"  not timing {x['tool']} ({x['phase']}): {x['why']}")
        samples: list[phases.Sample] = []
        prof = None
        load_before = machine.loadavg()
        with bench_lock(opts.lock_wait, say):
            say(f"timing ({opts.runs} runs per tool and phase, interleaved):")
            samples += phases.ssh_noop(host, noop_tools, opts.runs, say)
            samples += phases.local_noop(host, local_tools, opts.runs, say)
            if opts.change:
                samples += phases.change([host], [ours, *ssh_peers], ours, dry, _serves(host), opts.runs, say)
            if opts.profile:
                say("profiling ours (-X importtime, cProfile)")
                with environ(XDG_CACHE_HOME=str(WORK / "xdg-cache")):
                    prof = profile.run(ours, floor, host, proj.desired_file(FROM_VERSION))
        load_after = machine.loadavg()
        return Measured(samples, same, prof, load_before, load_after, machine.test_host(host), excluded)
    finally:
        tools.close_ansible_master(target)  # it would outlive the host by ControlPersist's 60 s
        tools.close_ours_master(target)
        shutil.rmtree(control_dir, ignore_errors=True)
