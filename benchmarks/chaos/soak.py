"""One strategy's soak on a booted host: its iterations under load, and everything they did.

An iteration writes the desired state it was given, does the disturbances planned before the
run, starts `reconcile --once --lock-timeout` (with a fault point for the agent when one is
planned) and, while it runs, the disturbances planned during it. When that run was cut short,
or a disturbance went on after it ended, `reconcile --once` runs again (without disturbances)
until a run completes (exit 0: converged, 3: rolled back or refused as quarantined). The run
that completed last is checked: what serves, against the host's gate records. Then the rows
the app acknowledged since the last check are looked for in its database.

`--once` rather than watch mode: each iteration then ends with a run that completed, and that
run's end is the moment to check; watch mode's passes are the same code over a held
connection (README, "Watch mode").
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from benchmarks.chaos.check import Verdict, rows_missing, serving_gated
from benchmarks.chaos.disturb import GATES, OTHER_APP, Disturber, Done, fault_env
from benchmarks.chaos.gatewatch import GateHistory, GateWatch
from benchmarks.chaos.plan import Desired, Iteration, iterations
from benchmarks.chaos.traffic import Sample, Traffic
from tests.deploying import REPO, RESET_APP, Project, allow_faults, reset_host, serves
from tests.testhost import TestHost

Say = Callable[[str], None]
START = Desired("1.0.0", "good", 0)


@dataclass(frozen=True)
class Settings:
    rate: float = 20.0  # requests per second through Caddy
    # 6 s to pass, as in the soak; 2 passes spanning 2 s from one process, so the
    # release that crashes 1 s after it listens can never pass.
    health: str = "timeout: 6\ninterval: 0.2\nstable: 2"
    gate_poll: float = 0.05  # seconds between reads of gates.json
    lock_timeout: float = 180.0
    run_timeout: float = 420.0
    recovery_runs: int = 3


@dataclass
class RunRecord:
    role: str  # main: with the disturbances; recovery: after them
    start: float
    end: float = 0.0
    rc: int | None = None  # None: did not exit in time (killed by the soak)
    result: str = ""
    error: str = ""
    actions: int = 0
    tail: str = ""  # the end of what it printed when it did not complete
    steps: list[tuple[float, float, str, str]] = field(default_factory=list)  # (start, end, action, target)

    @property
    def completed(self) -> bool:
        return self.rc in (0, 3)

    def describe(self) -> str:
        said = f"{self.role}: exit {self.rc}"
        if self.result:
            said += f" {self.result}"
        if self.actions:
            said += f", {self.actions} actions"
        said += f", {self.end - self.start:.1f} s"
        if self.error:
            said += f": {self.error.splitlines()[0][:200]}"
        elif self.tail and not self.completed:
            said += f": {self.tail.splitlines()[-1][:200]}"
        return said


@dataclass
class IterationRecord:
    index: int
    desired: Desired
    planned: list[str]
    start: float
    end: float = 0.0
    done: list[Done] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)
    verdict: Verdict | None = None
    rows_checked: int = 0
    rows_lost: list[tuple[int, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # anything else that went wrong

    @property
    def completed(self) -> bool:
        return bool(self.runs) and self.runs[-1].completed


@dataclass
class StrategyResult:
    strategy: str
    requested: int
    iterations: list[IterationRecord] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    history: GateHistory | None = None
    polls: int = 0
    failed_polls: int = 0
    acknowledged: int = 0
    lost_at_end: list[tuple[int, str]] = field(default_factory=list)
    rows_in_database: int = 0
    setup_error: str = ""
    stopped_early: str = ""
    seconds: float = 0.0
    caddy_journal: str = ""  # Caddy's log since the host's last boot, for the raw records


# time.time() - time.monotonic(): the run's log stamps wall time, the soak keeps monotonic time.
WALL = time.time() - time.monotonic()


def steps_of(log: str) -> list[tuple[float, float, str, str]]:
    """The actions a run's -v log says were done, on the soak's clock."""
    out = []
    for line in log.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or event.get("event") != "action.done" or "timestamp" not in event:
            continue
        try:
            wall = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        end = wall - WALL
        start = end - float(event.get("ms") or 0) / 1000
        out.append((start, end, str(event.get("action", "?")), str(event.get("target", "?"))))
    return out


def _run(project: Project, role: str, settings: Settings, env: dict[str, str], holder: list) -> RunRecord:
    """`reconcile --once --json -v` as a subprocess; `holder` gets its Popen (for the killer)."""
    cmd = project.command("--once", "--json", "-v", "--lock-timeout", f"{settings.lock_timeout:g}")
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **env)
    record = RunRecord(role, time.monotonic())
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=project.root
    )
    holder.append(proc)
    try:
        out, err = proc.communicate(timeout=settings.run_timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        record.error = f"did not finish within {settings.run_timeout:g} s; killed"
    record.end = time.monotonic()
    record.rc = proc.returncode if not record.error else None
    record.steps = steps_of(err)
    try:
        data = json.loads(out)
        record.result = str(data.get("result", ""))
        record.error = record.error or str(data.get("error") or "")
        record.actions = len(data.get("actions") or [])
    except ValueError:
        pass
    if not record.completed:
        record.tail = (out + "\n".join(ln for ln in err.splitlines() if '"action.done"' not in ln)).strip()[
            -600:
        ]
    return record


def reset_app(host: TestHost) -> None:
    """Everything of the app gone, the second app left as it is."""
    script = (
        "set -u\n"
        + RESET_APP.format(app="choiros")
        + "rm -rf /var/lib/reconciler/choiros /etc/caddy/apps/choiros.caddy "
        + "/etc/caddy/apps/choiros.maintenance\n"
        + "systemctl daemon-reload\n"
        + "caddy reload --config /etc/caddy/Caddyfile --adapter caddyfile --force >/dev/null 2>&1 || "
        + "systemctl restart caddy\ntrue\n"
    )
    host.exec(["bash", "-c", script], timeout=120)


class Soak:
    def __init__(
        self,
        host: TestHost,
        artifacts: dict[str, Path],
        workdir: Path,
        strategy: str,
        seed: int,
        settings: Settings,
        say: Say,
    ) -> None:
        self.host = host
        self.strategy = strategy
        self.seed = seed
        self.settings = settings
        self.say = say
        root = workdir / strategy
        (root / "other").mkdir(parents=True, exist_ok=True)
        self.project = Project(root, artifacts, host)
        self.other = Project(root / "other", artifacts, host, app="notes")
        self.disturber = Disturber(host, self.project, self.other, strategy)
        self.checked: set[int] = set()

    def set_up(self, fresh_host: bool) -> str:
        """The host with the second app serving and this app at 1.0.0; an error, or ''."""
        host = self.host
        if fresh_host:
            reset_host(host)
            self.other.write("1.0.0", **OTHER_APP)
            other = self.other.once("--lock-timeout", "120", timeout=300)
            if other.rc != 0:
                said = (other.stdout + other.stderr)[-400:]
                return f"deploying the second app failed (exit {other.rc}): {said}"
        else:
            reset_app(host)
        allow_faults(host)
        self.project.write(START.version, **START.sections(self.strategy, self.settings.health))
        first = self.project.once("--lock-timeout", "120", timeout=300)
        if first.rc != 0:
            return f"deploying 1.0.0 failed (exit {first.rc}): {(first.stdout + first.stderr)[-400:]}"
        if serves(host) != START.version:
            return f"after deploying 1.0.0 the site serves {serves(host)}"
        return ""

    def run(self, count: int, deadline: float) -> StrategyResult:
        result = StrategyResult(self.strategy, count)
        started = time.monotonic()
        pauses = random.Random(f"{self.seed}/{self.strategy}/pauses")
        watch = GateWatch(lambda: self.host.read(GATES), self.settings.gate_poll).start()
        traffic = Traffic(self.host.address, self.settings.rate, f"{self.seed}-{self.strategy}").start()
        try:
            time.sleep(2.0)  # steady traffic before the first change
            for it in iterations(self.seed, self.strategy, count, START):
                if time.monotonic() > deadline:
                    done = len(result.iterations)
                    result.stopped_early = f"the time cap was reached after {done} iterations"
                    break
                record = self.iteration(it, traffic)
                result.iterations.append(record)
                self.say(self._line(record))
                time.sleep(pauses.uniform(0.5, 1.5))  # some steady traffic between iterations
        finally:
            time.sleep(1.0)
            traffic.stop()
            watch.stop()
        result.samples = traffic.snapshot()
        result.history = watch.history()
        result.polls, result.failed_polls = watch.polls, watch.failed_polls
        acknowledged = [s.note for s in result.samples if s.note]
        result.acknowledged = len(acknowledged)
        try:
            result.lost_at_end, result.rows_in_database = rows_missing(self.host, acknowledged)
        except Exception as exc:
            result.setup_error = f"the final check of the database failed: {exc}"
        journal = self.host.exec(
            ["journalctl", "--no-pager", "-o", "short-iso-precise", "-u", "caddy"], check=False, timeout=120
        )
        result.caddy_journal = journal.stdout[-5_000_000:]
        result.seconds = time.monotonic() - started
        return result

    def iteration(self, it: Iteration, traffic: Traffic) -> IterationRecord:
        desired = it.desired
        record = IterationRecord(it.index, desired, [d.label for d in it.disturbances], time.monotonic())
        self.project.write(desired.version, **desired.sections(self.strategy, self.settings.health))
        for d in it.disturbances:
            if d.at is None and d.kind != "kill-agent":
                record.done.append(self.disturber.do(d, lambda: None))
        holder: list[subprocess.Popen[str]] = []
        threads = []
        lock = threading.Lock()
        main_start = time.monotonic()

        def later(d: object) -> None:
            time.sleep(max(0.0, main_start + d.at - time.monotonic()))  # type: ignore[attr-defined]
            done = self.disturber.do(d, lambda: holder[0] if holder else None)  # type: ignore[arg-type]
            with lock:
                record.done.append(done)

        for d in it.disturbances:
            if d.at is not None:
                thread = threading.Thread(target=later, args=(d,), daemon=True)
                thread.start()
                threads.append(thread)
        main = _run(self.project, "main", self.settings, fault_env(it.disturbances), holder)
        record.runs.append(main)
        for thread in threads:
            thread.join(600)
            if thread.is_alive():
                record.problems.append("a disturbance did not finish within 600 s")
        for d in it.disturbances:
            if d.kind == "kill-agent":
                record.done.append(Done(d.kind, d.label, main.start, main.end, _agent_outcome(main)))
        last_disturbance = max((d.end for d in record.done), default=0.0)
        while not record.runs[-1].completed or last_disturbance > record.runs[-1].end:
            if len(record.runs) > self.settings.recovery_runs:
                record.problems.append(f"no run completed in {len(record.runs)} runs")
                break
            record.runs.append(_run(self.project, "recovery", self.settings, {}, []))
            last_disturbance = 0.0
        record.end = time.monotonic()
        last = record.runs[-1]
        if last.completed:
            try:
                record.verdict = serving_gated(self.project, self.host, last.rc or 0, desired.version)
            except Exception as exc:
                record.problems.append(f"the check after the run failed: {type(exc).__name__}: {exc}")
        self._rows(record, traffic)
        return record

    def _rows(self, record: IterationRecord, traffic: Traffic) -> None:
        new = [s.note for s in traffic.snapshot() if s.note and s.note[0] not in self.checked]
        try:
            missing, _count = rows_missing(self.host, new)  # type: ignore[arg-type]
        except Exception as exc:
            record.problems.append(f"the rows could not be checked: {type(exc).__name__}: {exc}")
            return
        record.rows_checked = len(new)
        record.rows_lost = missing
        self.checked.update(i for i, _ in new)  # type: ignore[misc]

    def _line(self, r: IterationRecord) -> str:
        runs = "; ".join(run.describe() for run in r.runs)
        verdict = "no completed run" if r.verdict is None else ("gated" if r.verdict.ok else "NOT GATED")
        extra = f"; lost rows {len(r.rows_lost)}" if r.rows_lost else ""
        extra += f"; {'; '.join(r.problems)}" if r.problems else ""
        return (
            f"  {self.strategy} #{r.index} {r.desired.label} [{', '.join(r.planned) or 'undisturbed'}] "
            f"-> {runs} -> {verdict} {r.verdict.serving if r.verdict else ''}{extra}"
        )


def _agent_outcome(run: RunRecord) -> str:
    text = f"{run.error}\n{run.tail}".lower()
    if "ended before the host answered" in text:
        return "the agent died (the connection ended before the host answered)"
    if run.completed:
        return f"the run completed ({run.result}, {run.actions} actions): the fault point was not reached"
    return f"the run ended with exit {run.rc}"
