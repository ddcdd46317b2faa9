"""The timed phases, interleaved (A B C A B C ...) so drift on a shared machine hits every tool.

Each phase starts with one untimed warm-up round (bytecode, page cache, schema-verdict cache,
Ansible's first-run set-up), then `runs` timed rounds. Every timed run over SSH is bracketed
by a journal cursor on the host, so its sessions are counted from sshd's own log.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from benchmarks.peers import hosttime, sshlog
from benchmarks.peers.paths import FROM_VERSION, HOST_PROJECT, HOST_TOOLS, TO_VERSION
from benchmarks.peers.tools import LocalTool, Tool, ours_plans_only_bookkeeping, output, why_failed

if TYPE_CHECKING:
    from tests.testhost import TestHost

Say = Callable[[str], None]


@dataclass
class Sample:
    phase: str  # ssh-noop | change | local-noop
    tool: str
    run: int  # -1: warm-up (not reported)
    wall_s: float
    maxrss_kb: int
    rc: int
    verdict: str
    channels: dict[str, int] | None = None
    check: str = ""
    ok: bool = True
    rss_from: str = ""
    cpu_s: float = 0.0  # user + system CPU of the command and the children it waited for
    host_cpu_s: float = 0.0  # CPU used inside the host(s) meanwhile (their cgroups), SSH runs only
    why: str = ""  # when not ok: what happened instead, in one line (tools.why_failed)
    tail: str = field(default="", repr=False)  # end of the output when something went wrong
    output: str = field(default="", repr=False)  # all of it, when the tool asked (Tool.keep_output)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def tail_text(result: dict[str, Any]) -> str:
    return (str(result["stdout"])[-1500:] + "\n--- stderr ---\n" + str(result["stderr"])[-1500:]).strip()


def host_cpu_s(hosts: Sequence[TestHost]) -> float:
    """CPU seconds used so far inside these hosts: their cgroup2 `cpu.stat` (0 without cgroup2).
    The hosts share this machine's cores with the tools, so their work slows the tools down."""
    from tests.testhost import cgroups

    total = 0
    for host in hosts:
        for path in cgroups.paths_for(host.name):
            with contextlib.suppress(OSError):
                stat = (path / "cpu.stat").read_text().split()
                total += int(stat[stat.index("usage_usec") + 1])
                break
    return total / 1e6


def timed_ssh_run(
    hosts: Sequence[TestHost],
    tool: Tool,
    version: str,
    phase: str,
    run: int,
    expect: str,
    *,
    count: bool = True,
) -> Sample:
    """One timed run of a tool over SSH against these hosts; with `count`, its sessions are
    counted on every one (sshd must log at DEBUG1: sshlog.enable_debug)."""
    if tool.before is not None:
        tool.before()
    marks = [sshlog.cursor(host) for host in hosts] if count else []
    cpu_before = host_cpu_s(hosts)
    keep = None if tool.keep_output else hosttime.TAIL
    result = hosttime.run_timed(tool.argv(version), env=tool.env, cwd=tool.cwd, timeout=900, keep=keep)
    cpu_after = host_cpu_s(hosts)
    channels = None
    if count:
        channels = sshlog.total(sshlog.since(host, mark) for host, mark in zip(hosts, marks, strict=True))
    verdict = tool.verdict(result["rc"], output(result))
    sample = Sample(
        phase,
        tool.name,
        run,
        result["wall_s"],
        result["maxrss_kb"],
        result["rc"],
        verdict,
        channels.as_dict() if channels else None,
        ok=verdict == expect,
        rss_from=result["rss_from"],
        cpu_s=result["user_s"] + result["sys_s"],
        host_cpu_s=cpu_after - cpu_before,
    )
    if tool.keep_output:
        sample.output = output(result)
    if not sample.ok:
        sample.tail = tail_text(result)
        sample.why = why_failed(verdict, expect, result["rc"], output(result))
    return sample


def ssh_noop(host: TestHost, tools: list[Tool], runs: int, say: Say) -> list[Sample]:
    """Nothing to do, over SSH from this machine: the host is converged at FROM_VERSION."""
    samples: list[Sample] = []
    for run in range(-1, runs):
        for tool in tools:
            expect = "ran" if "floor" in tool.name else "unchanged"
            sample = timed_ssh_run([host], tool, FROM_VERSION, "ssh-noop", run, expect)
            samples.append(sample)
            say(line(sample))
    return samples


def change(
    hosts: Sequence[TestHost],
    tools: list[Tool],
    reset: Tool,
    dry_run: Tool,
    serves: Callable[[], str | None],
    runs: int,
    say: Say,
    phase: str = "change",
    after_each: Callable[[Sample], None] | None = None,
    quiet_sshd: Callable[[], None] | None = None,
) -> list[Sample]:
    """FROM_VERSION -> TO_VERSION. Every tool starts from the same state: ours converges the
    host(s) back to FROM_VERSION (untimed) before each run. After the run, Caddy must serve
    TO_VERSION (page and API agree; on every host) and ours must plan nothing for TO_VERSION
    but its own bookkeeping (tools.BOOKKEEPING): the peer left the app exactly as ours would.
    `after_each` may add to a sample (untimed).
    With `quiet_sshd`, sessions are counted in the warm-up round only, and it is called before
    the timed rounds (to end sshd's DEBUG1 logging, which costs the hosts CPU per session)."""
    samples: list[Sample] = []
    for run in range(-1, runs):
        if run == 0 and quiet_sshd is not None:
            quiet_sshd()
        for tool in tools:
            back = hosttime.run_timed(reset.argv(FROM_VERSION), env=reset.env, cwd=reset.cwd, timeout=600)
            if back["rc"] != 0 or serves() != FROM_VERSION:
                raise RuntimeError(f"resetting the host to {FROM_VERSION} failed:\n{tail_text(back)}")
            count = quiet_sshd is None or run < 0
            sample = timed_ssh_run(hosts, tool, TO_VERSION, phase, run, "changed", count=count)
            if after_each is not None:
                after_each(sample)
            served = serves()
            # All of it (keep=None): a fleet's plan as JSON outgrows the kept tail, and a cut
            # document cannot be read.
            after = hosttime.run_timed(
                dry_run.argv(TO_VERSION), env=dry_run.env, cwd=dry_run.cwd, timeout=120, keep=None
            )
            left_alone = ours_plans_only_bookkeeping(after["rc"], after["stdout"])
            sample.check = f"serves {served}; ours --dry-run exit {after['rc']}" + (
                " (only its own records)" if after["rc"] == 2 and left_alone else ""
            )
            if served != TO_VERSION or not left_alone:
                sample.why = sample.why or f"after it: {sample.check}"
                sample.ok = False
                sample.tail = (sample.tail + "\n" + tail_text(after)).strip()
            samples.append(sample)
            say(line(sample))
    # Leave the host as the other phases expect it.
    hosttime.run_timed(reset.argv(FROM_VERSION), env=reset.env, cwd=reset.cwd, timeout=300)
    return samples


def run_in_host(host: TestHost, tool: LocalTool, version: str) -> dict[str, Any]:
    """Time a command inside the host with hosttime.py, so nsenter's cost is not measured."""
    argv = ["python3", f"{HOST_TOOLS}/hosttime.py", "--cwd", HOST_PROJECT, "--timeout", "300"]
    argv += ["--rss-via", f"{HOST_TOOLS}/time"]
    for key, value in tool.env.items():
        argv += ["--env", f"{key}={value}"]
    result = host.exec([*argv, "--", *tool.argv(version)], timeout=330)
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def local_noop(host: TestHost, tools: list[LocalTool], runs: int, say: Say) -> list[Sample]:
    """Nothing to do, each tool run on the host itself: no SSH at all, so what is left is each
    tool's own start-up and work."""
    samples: list[Sample] = []
    for run in range(-1, runs):
        for tool in tools:
            result = run_in_host(host, tool, FROM_VERSION)
            verdict = tool.verdict(result["rc"], output(result))
            sample = Sample(
                "local-noop",
                tool.name,
                run,
                result["wall_s"],
                result["maxrss_kb"],
                result["rc"],
                verdict,
                ok=verdict == "unchanged",
                rss_from=result["rss_from"],
            )
            if not sample.ok:
                sample.tail = tail_text(result)
                sample.why = why_failed(verdict, "unchanged", result["rc"], output(result))
            samples.append(sample)
            say(line(sample))
    return samples


def line(s: Sample) -> str:
    run = "warm-up" if s.run < 0 else f"run {s.run + 1}"
    ch = s.channels or {}
    sessions = f" sessions={ch.get('sessions')} conns={ch.get('connections')}" if s.channels else ""
    flag = "" if s.ok else f"  <-- UNEXPECTED: {s.why}"
    check = f" [{s.check}]" if s.check else ""
    return (
        f"  {s.phase:10} {run:8} {s.tool:22} {s.wall_s * 1000:8.0f} ms  rss={s.maxrss_kb / 1024:5.1f} MiB"
        f"  {s.verdict}{sessions}{check}{flag}"
    )
