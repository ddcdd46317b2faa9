"""(b) What a watch pass costs when there is nothing to do, over the held SSH connection.

Three views of the same thing:
- the CLI itself: `reconcile --watch --interval 0.5`; every pass logs `planned` with the
  observe round trip it measured (`no changes` is logged at debug level, which the CLI never
  enables, so `planned` is the per-pass event to count);
- the host's sshd at LogLevel DEBUG1: one `server_input_channel_open: ctype session` line per
  exec channel, so channels per pass is counted by the server, not inferred by the client;
- in-process: the engine's own Watcher.run_pass timed pass by pass, next to floors for the
  same connection (an exec of `true`, an exec of `python3 -c pass`), to see what a pass is
  made of.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from benchmarks.watch_latency.watcher import WatchProcess
from reconciler.agent.protocol import PROTOCOL
from tests.testhost import TestHost

SSHD_DROPIN = "/etc/ssh/sshd_config.d/10-bench-debug.conf"
CHANNEL_LINE = "server_input_channel_open: ctype session"


@dataclass
class CliNoop:
    interval: float
    seconds: float
    passes: int
    changed: int  # passes that planned something (must be 0 on a converged host)
    observe_ms: list[float]
    period_s: list[float]  # between consecutive passes' log lines
    channels: int  # exec channels sshd opened meanwhile
    connections: int  # SSH connections sshd accepted meanwhile


@dataclass(frozen=True)
class Linger:
    """What the agent process does after its answer, seen from the same SSH channel."""

    after_answer_ms: list[float]
    exit_status: list[int]  # -1: no exit status, i.e. killed by a signal
    stderr: str  # first line of the agent's stderr, if any


@dataclass
class InProcess:
    passes: int
    pass_ms: list[float] = field(default_factory=list)  # Watcher.run_pass, whole
    load_ms: list[float] = field(default_factory=list)  # reading and checking the file
    git_ms: list[float] = field(default_factory=list)  # which commit (git subprocesses)
    once_ms: list[float] = field(default_factory=list)  # observe round trip + plan
    exec_true_ms: list[float] = field(default_factory=list)  # floor: open channel, exec, exit
    exec_python_ms: list[float] = field(default_factory=list)  # floor + host python start-up
    # Inside the host, no SSH, a fresh python3 per sample:
    agent_process_ms: list[float] = field(default_factory=list)  # start, load, observe, exit
    agent_load_ms: list[float] = field(default_factory=list)  # decompress + compile + imports
    agent_observe_ms: list[float] = field(default_factory=list)  # the first observe() call
    linger: Linger | None = None


def enable_sshd_debug(host: TestHost) -> None:
    """New connections log every channel; sshd keeps serving (reload, not restart)."""
    host.write(SSHD_DROPIN, b"LogLevel DEBUG1\n")
    host.exec(["systemctl", "reload", "ssh"])


def disable_sshd_debug(host: TestHost) -> None:
    host.exec(["rm", "-f", SSHD_DROPIN])
    host.exec(["systemctl", "reload", "ssh"])


def _journal_since(host: TestHost, since: str) -> str:
    return host.exec(["journalctl", "--no-pager", "-o", "cat", "--since", since], check=False).stdout


def cli_noop(host: TestHost, file: Path, interval: float, seconds: float) -> CliNoop:
    enable_sshd_debug(host)
    since = host.exec(["date", "+%Y-%m-%d %H:%M:%S.%N"]).stdout.strip()[:26]
    with WatchProcess(file, host, "--interval", str(interval)) as watch:
        watch.wait_for("planned")
        time.sleep(seconds)
        watch.stop()
        planned = watch.named("planned")
    time.sleep(0.3)  # journald receives the last lines asynchronously
    journal = _journal_since(host, since)
    disable_sshd_debug(host)
    arrivals = [e["_t"] for e in planned]
    return CliNoop(
        interval=interval,
        seconds=seconds,
        passes=len(planned),
        changed=sum(1 for e in planned if e.get("actions")),
        observe_ms=[float(e.get("observe_ms", 0)) for e in planned],
        period_s=[b - a for a, b in zip(arrivals, arrivals[1:], strict=False)],
        channels=journal.count(CHANNEL_LINE),
        connections=journal.count("Accepted publickey"),
    )


PROBE = Path(__file__).with_name("agent_probe.py")


def agent_timing(host: TestHost, spec: dict[str, object], samples: int) -> list[list[float]]:
    """Per sample, inside the host: [process wall ms, load the agent ms, first observe ms]."""
    # Files, not stdin: TestHost.exec(input=...) fails for commands running over 0.5 s.
    host.write("/tmp/bench_agent_probe.py", PROBE.read_bytes())
    host.write("/tmp/bench_observe_spec.json", json.dumps(spec).encode())
    out = host.exec(["python3", "/tmp/bench_agent_probe.py", str(samples), "/tmp/bench_observe_spec.json"])
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


# Each agent process outlives its answer by ~1 s (see linger()), and sshd allows 10 open
# sessions per connection (MaxSessions): back-to-back passes would be refused after ~10, so
# passes here are spaced as a short --interval would space them.
PACE_S = 0.25


def in_process(host: TestHost, file: Path, passes: int) -> InProcess:
    """The engine's pass, called directly: the same code watch mode runs, minus the process."""
    from reconciler import log as logmod
    from reconciler.engine import gitinfo
    from reconciler.engine.once import SilentReporter, reconcile_once
    from reconciler.engine.watch import Watcher, WatchSettings
    from reconciler.executors.connect import executor_for
    from reconciler.executors.ssh_options import SSHOptions
    from reconciler.observe import snapshot
    from reconciler.spec.load import load

    logmod.configure("error")  # the engine logs each pass at info; not wanted on our stderr
    # As `reconcile --watch` builds it: one resident agent serves every pass.
    options = SSHOptions(identity=(str(host.key_path),), known_hosts=str(host.known_hosts), resident=True)
    watcher = Watcher(file, lambda: load(file), lambda d: executor_for(d.target, options), WatchSettings())
    result = InProcess(passes)
    try:
        watcher.run_pass(["warm-up"])  # connects; imports; the schema verdict gets cached
        desired = load(file)
        executor = watcher.executor
        assert executor is not None
        for _ in range(passes):
            time.sleep(PACE_S)
            t0 = time.perf_counter()
            outcome = watcher.run_pass(["bench"])
            result.pass_ms.append((time.perf_counter() - t0) * 1000)
            if outcome is None or outcome.plan.changed:
                raise RuntimeError("a no-op pass planned something or failed; is the host converged?")
        for _ in range(passes):
            time.sleep(PACE_S)
            result.once_ms.append(_timed(lambda: reconcile_once(desired, executor, None, SilentReporter())))
    finally:
        if watcher.executor is not None:
            watcher.executor.close()
    for _ in range(passes):  # local work only: no pacing needed
        result.load_ms.append(_timed(lambda: load(file)))
        result.git_ms.append(_timed(lambda: gitinfo.revision_of(file)))
    client = host.connect()
    try:
        transport = client.get_transport()
        assert transport is not None
        for _ in range(passes):  # these exit at once, so sessions do not pile up
            result.exec_true_ms.append(_timed(lambda: _exec(transport, "true")))
            result.exec_python_ms.append(_timed(lambda: _exec(transport, "python3 -c pass")))
        result.linger = linger(transport, snapshot.request_for(desired))
    finally:
        client.close()
    rows = agent_timing(host, snapshot.request_for(desired), passes)
    result.agent_process_ms = [r[0] for r in rows]
    result.agent_load_ms = [r[1] for r in rows]
    result.agent_observe_ms = [r[2] for r in rows]
    return result


def _exec(transport: paramiko.Transport, command: str) -> None:
    chan = transport.open_session()
    try:
        chan.exec_command(command)
        chan.recv_exit_status()
    finally:
        chan.close()


def linger(transport: paramiko.Transport, spec: dict[str, object], samples: int = 3) -> Linger:
    """The real bootstrap and agent, as SSHExecutor sends them, but the channel stays open
    until the agent exits instead of being closed right after the answer."""
    from reconciler.executors.bootstrap import agent_blob as _agent_blob
    from reconciler.executors.bootstrap import bootstrap_command

    after, statuses, first_err = [], [], ""
    for _ in range(samples):
        chan = transport.open_session()
        try:
            chan.exec_command(bootstrap_command("python3", False))
            request = {"op": "observe", "protocol": PROTOCOL, "observe": spec, "payload_size": 0}
            chan.sendall(_agent_blob() + json.dumps(request).encode() + b"\n")
            chan.makefile("rb").readline()
            answered = time.perf_counter()
            statuses.append(chan.recv_exit_status())
            after.append((time.perf_counter() - answered) * 1000)
            err = chan.makefile_stderr("rb").read().decode("utf-8", "replace").strip()
            first_err = first_err or (err.splitlines() or [""])[0]
        finally:
            chan.close()
    return Linger(after, statuses, first_err)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
