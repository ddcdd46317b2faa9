"""Where our SSH no-op spends its time, next to the paramiko floor.

Three views, each the median of several runs (one run of anything is noisy on this machine):
- `-X importtime` of ours and of the floor, summed per top-level package (self times, so the
  rows add up), plus the cost of `invoke`, which paramiko's config module imports eagerly;
- cProfile of ours: the steps of one run (cProfile inflates pure-Python work such as imports,
  so read these as proportions; the timed samples say what a run costs);
- exec round trips on one open SSH connection to the host: `true`, `python3 -c pass` and our
  agent's observation, and inside the host the agent's compile / module / observe times;
- two A/B runs of proposals, without touching reconciler/: the whole no-op with paramiko's
  eager `import invoke` kept out (sys.modules["invoke"] = None before ours starts), and the
  agent's observation when its bytecode is cached on the host (imported from a folder there
  instead of compiled from the source sent on stdin).
"""

from __future__ import annotations

import json
import pstats
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.peers import hosttime
from benchmarks.peers.paths import FROM_VERSION
from benchmarks.peers.tools import Tool
from reconciler.agent.protocol import PROTOCOL

if TYPE_CHECKING:
    from tests.testhost import TestHost

#: (label, file suffix, function) -> cumulative time in cProfile, in the order a run does them.
FUNCTIONS = [
    ("load + validate desired-state.yaml", "reconciler/cli/commands.py", "load_desired"),
    (
        "import paramiko + SSH executor (reconciler.executors.connect.executor_for)",
        "connect.py",
        "executor_for",
    ),
    ("TCP + key exchange + auth (SSHExecutor.connect)", "reconciler/executors/ssh.py", "connect"),
    ("open the session channel (sshd's post-auth set-up)", "paramiko/transport.py", "open_session"),
    ("agent runs on the host, answer read (SSHExecutor._read_events)", "executors/ssh.py", "_read_events"),
    ("plan (pure)", "reconciler/plan/planner.py", "plan"),
    ("print the result", "reconciler/cli/commands.py", "finish"),
]

#: -X importtime lines as (depth, module, self ms, cumulative ms).
Entries = list[tuple[int, str, float, float]]

CACHED_AGENT_DIR = "/var/tmp/bench-agent"
CACHED_AGENT = "hostagent_cached"

#: Run inside the host by its python3: the agent's cost without any transport around it.
AGENT_PARTS = """
import json, os, sys, time
folder = "/src/reconciler/agent"
t0 = time.perf_counter()
codes = {n[:-3]: compile(open(os.path.join(folder, n), "rb").read(), n, "exec")
         for n in sorted(os.listdir(folder)) if n.endswith(".py")}
t1 = time.perf_counter()
sys.path.insert(0, "/src")
from reconciler.agent.observe import observe
t2 = time.perf_counter()
spec = json.loads(sys.argv[1])
observe(spec)
t3 = time.perf_counter()
observe(spec)
t4 = time.perf_counter()
print(json.dumps({"compile": t1 - t0, "module": t2 - t1, "observe_first": t3 - t2, "observe": t4 - t3}))
"""


@dataclass(frozen=True)
class Profile:
    import_total_ms: float
    floor_import_total_ms: float
    packages: list[tuple[str, float]]  # top-level package -> self ms summed, ours
    invoke_ms: float  # cumulative import of invoke (pulled in by paramiko.config), ours
    functions: list[tuple[str, float]]  # label -> cumulative ms, ours under cProfile
    round_trips: dict[str, float]  # exec on an open connection -> ms
    agent_parts: dict[str, float]  # inside the host -> ms
    modules: list[tuple[str, float]]  # our own modules -> self import ms
    invoke_ab: dict[str, float]  # whole SSH no-op, as is vs with invoke kept out -> median ms

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def importtime_entries(stderr: str) -> Entries:
    """(depth, module, self ms, cumulative ms) for every line of -X importtime output."""
    out = []
    for line in stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3:
            continue
        self_us = parts[0].removeprefix("import time:").strip()
        if not self_us.isdigit():
            continue  # the header line
        name = parts[2].rstrip("\n")[1:]  # one space after the bar, then two per level
        depth = (len(name) - len(name.lstrip(" "))) // 2
        out.append((depth, name.strip(), int(self_us) / 1000, int(parts[1]) / 1000))
    return out


def parse_importtime(stderr: str) -> dict[str, float]:
    """Top-level imports (those the program itself triggered) -> cumulative ms."""
    out: dict[str, float] = {}
    for depth, name, _self, cumulative in importtime_entries(stderr):
        if depth == 0:
            out[name] = out.get(name, 0.0) + cumulative
    return out


def by_package(entries: Entries) -> dict[str, float]:
    """Self times summed per top-level package: rows that add up to the whole import cost."""
    out: dict[str, float] = {}
    for _depth, name, self_ms, _cum in entries:
        root = name.split(".", 1)[0]
        out[root] = out.get(root, 0.0) + self_ms
    return out


def _with_flags(argv: list[str], *flags: str) -> list[str]:
    """Interpreter flags go right after the python executable."""
    return [argv[0], *flags, *argv[1:]]


def _importtime_runs(tools: list[Tool], repeats: int) -> list[list[Entries]]:
    """-X importtime of each tool, interleaved like the timed runs; one list of runs per tool."""
    runs: list[list[Entries]] = [[] for _ in tools]
    for _ in range(repeats):
        for i, tool in enumerate(tools):
            argv = _with_flags(tool.argv(FROM_VERSION), "-X", "importtime")
            result = hosttime.run_timed(argv, env=tool.env, cwd=tool.cwd, timeout=120, keep=None)
            runs[i].append(importtime_entries(result["stderr"]))
    return runs


def _median_of(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = set().union(*dicts)
    return {k: statistics.median(d.get(k, 0.0) for d in dicts) for k in keys}


def functions(tool: Tool, repeats: int) -> list[tuple[str, float]]:
    per_label: dict[str, list[float]] = {label: [] for label, _f, _n in FUNCTIONS}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            out = Path(tmp) / f"run{i}.prof"
            argv = tool.argv(FROM_VERSION)  # [python, "-m", "reconciler", ...]
            profiled = [argv[0], "-m", "cProfile", "-o", str(out), *argv[1:]]
            hosttime.run_timed(profiled, env=tool.env, cwd=tool.cwd, timeout=120)
            stats = pstats.Stats(str(out)).stats  # type: ignore[attr-defined]
            for label, file_suffix, func in FUNCTIONS:
                cum = sum(
                    value[3]
                    for (filename, _line, name), value in stats.items()
                    if filename.endswith(file_suffix) and name == func
                )
                per_label[label].append(cum * 1000)
    return [(label, statistics.median(values)) for label, values in per_label.items()]


def _exchange(transport: Any, command: str, data: bytes) -> bytes:
    """One exec as ours does it: stdin stays open until the agent's result line arrives (EOF on
    stdin tells our agent the client went away); other commands just run to their end."""
    channel = transport.open_session()
    try:
        channel.exec_command(command)
        if data:
            channel.sendall(data)
        else:
            channel.shutdown_write()
        answer = b""
        while chunk := channel.recv(65536):
            answer += chunk
            if data and b'"event": "result"' in answer and answer.endswith(b"\n"):
                break
        return answer
    finally:
        channel.close()


def round_trips(host: TestHost, observe_request: dict[str, Any], repeats: int) -> dict[str, float]:
    """Exec round trips on one open connection (no connect, no auth): what each costs by itself."""
    import reconciler.agent
    from reconciler.executors import bootstrap

    blob = bootstrap.agent_blob()
    request = json.dumps(dict(observe_request, payload_size=0)).encode() + b"\n"
    # The proposal, emulated: the agent as a package in a folder on the host, so python3 keeps
    # its bytecode in __pycache__ after the first run; the request alone goes over stdin.
    for source in Path(reconciler.agent.__file__).parent.glob("*.py"):
        host.write(f"{CACHED_AGENT_DIR}/{CACHED_AGENT}/{source.name}", source.read_bytes())
    cached = (
        f'python3 -c \'import sys; sys.path.insert(0, "{CACHED_AGENT_DIR}"); '
        f"from {CACHED_AGENT}.main import main; main()'"
    )
    commands = {
        "`true`": ("true", b""),
        "`python3 -c pass`": ("python3 -c pass", b""),
        "our agent's observation (as sent by ours)": (
            bootstrap.bootstrap_command("python3", False),
            blob + request,
        ),
        "the same, agent bytecode cached on the host (proposal, emulated)": (cached, request),
    }
    client = host.connect()
    try:
        transport = client.get_transport()
        assert transport is not None
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(repeats):
            for name, (command, data) in commands.items():
                started = time.perf_counter()
                answer = _exchange(transport, command, data)
                times[name].append((time.perf_counter() - started) * 1000)
                if data and b'"event": "result"' not in answer:
                    raise RuntimeError(f"{name}: the agent did not answer: {answer[-500:]!r}")
    finally:
        client.close()
    return {name: statistics.median(values) for name, values in times.items()}


def agent_parts(host: TestHost, observe_spec: dict[str, Any], repeats: int) -> dict[str, float]:
    runs = []
    for _ in range(repeats):
        result = host.exec(["python3", "-c", AGENT_PARTS, json.dumps(observe_spec)])
        runs.append({k: v * 1000 for k, v in json.loads(result.stdout).items()})
    return _median_of(runs)


def invoke_ab(ours: Tool, repeats: int) -> dict[str, float]:
    """The whole SSH no-op as is, and with `invoke` kept out of paramiko's import, interleaved."""
    argv = ours.argv(FROM_VERSION)  # [python, "-m", "reconciler", *args]

    def variant(block: bool) -> list[str]:
        code = (
            "import runpy, sys\n"
            + ("sys.modules['invoke'] = None\n" if block else "")
            + f"sys.argv = ['reconcile', *{argv[3:]!r}]\n"
            + "runpy.run_module('reconciler', run_name='__main__', alter_sys=True)\n"
        )
        return [argv[0], "-c", code]

    variants = {"as is": variant(False), "invoke kept out": variant(True)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, command in variants.items():
            result = hosttime.run_timed(command, env=ours.env, cwd=ours.cwd, timeout=120)
            if result["rc"] == 0:
                times[name].append(result["wall_s"] * 1000)
    return {name: statistics.median(values) for name, values in times.items() if values}


def run(ours: Tool, floor: Tool, host: TestHost, desired_file: Path, repeats: int = 7) -> Profile:
    from reconciler.observe import snapshot
    from reconciler.spec.load import load

    ours_runs, floor_runs = _importtime_runs([ours, floor], repeats)
    packages = _median_of([by_package(entries) for entries in ours_runs])
    invoke = statistics.median(
        sum(cum for _d, name, _s, cum in entries if name == "invoke") for entries in ours_runs
    )
    spec = snapshot.request_for(load(desired_file))
    modules = _median_of(
        [
            {name: self_ms for _d, name, self_ms, _c in entries if name.startswith("reconciler")}
            for entries in ours_runs
        ]
    )
    return Profile(
        import_total_ms=statistics.median(sum(p.values()) for p in map(by_package, ours_runs)),
        floor_import_total_ms=statistics.median(sum(p.values()) for p in map(by_package, floor_runs)),
        packages=sorted(packages.items(), key=lambda kv: kv[1], reverse=True)[:12],
        invoke_ms=invoke,
        functions=functions(ours, max(3, repeats)),
        round_trips=round_trips(host, {"op": "observe", "protocol": PROTOCOL, "observe": spec}, repeats * 3),
        agent_parts=agent_parts(host, spec, repeats),
        modules=sorted(modules.items(), key=lambda kv: kv[1], reverse=True)[:6],
        invoke_ab=invoke_ab(ours, repeats * 3),
    )
