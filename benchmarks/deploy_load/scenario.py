"""One strategy under load: deploy v1, start the stream, deploy v2 and roll back to v1 during it.

The deploys are the real CLI (`reconcile --once --json -v` over SSH, a subprocess, as CI runs
it); the load generator runs on this process's event loop meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.deploy_load.loadgen import LoadGenerator, Sample
from benchmarks.deploy_load.stats import PhaseStats, Switch, Window, summarise, switch
from tests.deploying import Project, Run, reset_host, serves
from tests.testhost import TestHost

OLD, NEW = "1.0.0", "2.0.0"
REPO = Path(__file__).resolve().parents[2]


def build_releases(out: Path) -> dict[str, Path]:
    """The example app's two releases, built as CI would (tests' build_artifacts makes seven)."""
    sys.path.insert(0, str(REPO / "examples" / "app"))
    import build  # type: ignore[import-not-found]

    return {version: build.build(version, out)[0] for version in (OLD, NEW)}


@dataclass(frozen=True)
class Settings:
    rate: float = 150.0
    seconds: float = 25.0  # the stream lasts at least this long...
    deploy_at: float = 4.0  # ...the deploy starts this far into it...
    gap: float = 4.0  # ...the rollback this long after the deploy finished...
    tail: float = 3.0  # ...and the stream goes on at least this long after the rollback.
    keepalive: bool = False
    health: str = "timeout: 30"  # the schema's defaults otherwise: passes 2, stable 1 s
    request_timeout: float = 15.0


@dataclass
class Change:
    """One `reconcile --once` run during the stream (the deploy or the rollback)."""

    name: str
    version: str
    start: float  # perf_counter
    end: float
    rc: int
    result: str
    actions: list[tuple[str, str]]
    timings_ms: dict[str, float]
    steps: list[tuple[float, str, str, float]]  # (s after start, action, target, ms) from the log
    error: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class StrategyResult:
    strategy: str
    rate: float
    keepalive: bool
    changes: list[Change]
    phases: list[PhaseStats]
    switches: dict[str, list[Switch]] = field(default_factory=dict)  # phase name -> per path
    samples: list[Sample] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    caddy_log: str = ""
    run: int = 1  # which repetition of this strategy and connection mode


def _steps(stderr: str, start_wall: float, start_perf: float, change_start: float) -> list[Any]:
    """`action.done` events of the -v log, placed on the run's clock (the log stamps wall time)."""
    out = []
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") != "action.done" or "timestamp" not in event:
            continue
        wall = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
        at = wall - start_wall + start_perf - change_start
        out.append((round(at, 3), event.get("action", "?"), event.get("target", "?"), event.get("ms") or 0))
    return out


async def _change(project: Project, name: str, version: str, strategy: str, s: Settings) -> Change:
    project.write(version, strategy=strategy, health=s.health)
    wall, start = time.time(), time.perf_counter()
    run: Run = await asyncio.to_thread(project.reconcile, "--once", "--json", "-v", timeout=180)
    end = time.perf_counter()
    try:
        data = run.json
    except ValueError:
        data = {"result": "no-json", "error": (run.stdout + run.stderr)[-500:]}
    return Change(
        name=name,
        version=version,
        start=start,
        end=end,
        rc=run.rc,
        result=str(data.get("result")),
        actions=[(a["action"], a["target"]) for a in data.get("actions", [])],
        timings_ms={k: round(v, 1) for k, v in (data.get("timings_ms") or {}).items()},
        steps=_steps(run.stderr, wall, start, start),
        error=str(data.get("error") or ""),
    )


async def _stream(project: Project, strategy: str, s: Settings) -> tuple[list[Sample], list[Change], float]:
    gen = LoadGenerator(project.host.address, rate=s.rate, timeout=s.request_timeout, keepalive=s.keepalive)
    stop = asyncio.Event()
    task = asyncio.create_task(gen.run(stop))
    await asyncio.sleep(s.deploy_at)
    deploy = await _change(project, "deploy", NEW, strategy, s)
    await asyncio.sleep(s.gap)
    rollback = await _change(project, "rollback", OLD, strategy, s)
    # Keep the stream going until both the minimum length and the tail after the rollback.
    end = max(gen.start + s.seconds, rollback.end + s.tail)
    await asyncio.sleep(max(0.0, end - time.perf_counter()))
    stop.set()
    samples = await task
    return samples, [deploy, rollback], end


def run_strategy(
    host: TestHost, artifacts: dict[str, Path], workdir: Path, strategy: str, s: Settings
) -> StrategyResult:
    reset_host(host)
    folder = workdir / strategy
    folder.mkdir(parents=True, exist_ok=True)
    project = Project(folder, artifacts, host)
    project.write(OLD, strategy=strategy, health=s.health)
    first = project.once()
    if first.rc != 0 or serves(host) != OLD:
        raise RuntimeError(
            f"{strategy}: deploying {OLD} failed (exit {first.rc}): {first.stdout}{first.stderr}"
        )
    since = host.exec(["date", "+%Y-%m-%d %H:%M:%S.%N"]).stdout.strip()[:26]

    samples, changes, end = asyncio.run(_stream(project, strategy, s))

    deploy, rollback = changes
    start = min(x.due for x in samples)
    windows = [
        Window(f"steady {OLD}", start, deploy.start),
        Window("deploy", deploy.start, deploy.end),
        Window(f"steady {NEW}", deploy.end, rollback.start),
        Window("rollback", rollback.start, rollback.end),
        Window(f"steady {OLD} again", rollback.end, end),
    ]
    switches = {
        "deploy": [switch(samples, windows[1], p, OLD, NEW) for p in ("/api/version", "/")],
        "rollback": [switch(samples, windows[3], p, NEW, OLD) for p in ("/api/version", "/")],
    }
    caddy = host.exec(
        ["journalctl", "--no-pager", "-o", "cat", "-u", "caddy", "--since", since], check=False
    ).stdout
    return StrategyResult(
        strategy=strategy,
        rate=s.rate,
        keepalive=s.keepalive,
        changes=changes,
        phases=[summarise(samples, w) for w in windows],
        switches=switches,
        samples=samples,
        windows=windows,
        caddy_log=caddy,
    )
