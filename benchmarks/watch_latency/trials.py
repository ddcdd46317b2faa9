"""(a) From saving desired-state.yaml to the site serving the new version, under watch mode.

Each trial renames a new file over the old one (an editor's save) and times, on this
machine's clock: the `plan` log event (the first action is about to start), the `current`
symlink changing on the host (read through /proc/<pid>/root, no exec needed), the API and the
page answering the new version, and the `converged` log event.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.watch_latency.watcher import WatchProcess, save_atomically
from tests.deploying import APP, Project, reset_host
from tests.testhost import TestHost
from tests.testhost.httpget import get

OLD, NEW = "1.0.0", "2.0.0"


@dataclass(frozen=True)
class Trial:
    strategy: str
    version: str
    plan_s: float  # file renamed -> `plan` logged (observe and plan done, apply starts)
    observe_ms: float  # the observe round trip inside that, as the pass measured it
    link_s: float | None  # -> /opt/<app>/current names the new release on the host
    api_s: float | None  # -> GET /api/version answers the new version through Caddy
    page_s: float | None  # -> GET / shows the new version (both: the site serves it)
    converged_s: float  # -> `converged` logged (applied and verified)
    actions: tuple[str, ...]


class _Poller:
    """Polls one thing in a tight loop from a thread until it reports the awaited value."""

    def __init__(self, probe: object, period: float) -> None:
        self.probe, self.period = probe, period
        self.hit: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> _Poller:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.probe():  # type: ignore[operator]
                    self.hit = time.perf_counter()
                    return
            except (OSError, ValueError):
                pass  # mid-switch: a missing link or a refused connection is "not yet"
            time.sleep(self.period)

    def result(self, timeout: float) -> float | None:
        self._thread.join(timeout)
        self._stop.set()
        return self.hit


def _serves(host: TestHost, path: str, version: str) -> bool:
    answer = get(host.address, path, timeout=2)
    needle = f'"version": "{version}"' if path.startswith("/api/") else f"{APP} {version}"
    return answer.status == 200 and needle in answer.text


def prepare(host: TestHost, project: Project, strategy: str, health: str) -> None:
    """A clean host serving OLD; for blue-green both colours warm (green NEW, blue OLD), so
    every trial is the documented switch-only path."""
    reset_host(host)
    steps = [OLD, NEW, OLD] if strategy == "blue-green" else [OLD]
    for version in steps:
        project.write(version, strategy=strategy, health=health)
        run = project.once()
        if run.rc != 0:
            raise RuntimeError(f"preparing {strategy} {version} failed: {run.stdout}{run.stderr}")


def run_trials(
    host: TestHost, project: Project, strategy: str, count: int, health: str, settle: float = 0.5
) -> list[Trial]:
    file = project.root / "desired-state.yaml"
    prepare(host, project, strategy, health)
    link = host.root / "opt" / APP / "current"
    trials: list[Trial] = []
    # A long drift interval: every pass measured here is caused by the file change.
    with WatchProcess(file, host, "--interval", "600") as watch:
        watch.wait_for("planned")  # the start-up pass found nothing to do
        for i in range(count):
            version = NEW if i % 2 == 0 else OLD
            text = project.render(version, strategy=strategy, health=health)
            plans, convergeds = len(watch.named("plan")), len(watch.named("converged"))
            pollers = {
                "link": _Poller(lambda v=version: os.readlink(link).endswith(f"/{v}"), 0.002),
                "api": _Poller(lambda v=version: _serves(host, "/api/version", v), 0.005),
                "page": _Poller(lambda v=version: _serves(host, "/", v), 0.005),
            }
            t0 = time.perf_counter()
            save_atomically(file, text)
            for poller in pollers.values():
                poller.start()
            plan = watch.wait_for("plan", plans + 1)
            done = watch.wait_for("converged", convergeds + 1)
            hits = {name: p.result(timeout=30) for name, p in pollers.items()}
            trials.append(
                Trial(
                    strategy=strategy,
                    version=version,
                    plan_s=plan["_t"] - t0,
                    observe_ms=float(plan.get("observe_ms", 0.0)),
                    link_s=None if hits["link"] is None else hits["link"] - t0,
                    api_s=None if hits["api"] is None else hits["api"] - t0,
                    page_s=None if hits["page"] is None else hits["page"] - t0,
                    converged_s=done["_t"] - t0,
                    actions=tuple(str(a.get("action", a)) for a in plan.get("actions", [])),
                )
            )
            time.sleep(settle)
    return trials


def new_project(folder: Path, artifacts: dict[str, Path], host: TestHost) -> Project:
    folder.mkdir(parents=True, exist_ok=True)
    return Project(folder, artifacts, host)
