"""Cut a stream of samples into phases and summarise each: counts, failures by kind, latency,
and when the served version switched."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from benchmarks.deploy_load.loadgen import Sample


@dataclass(frozen=True)
class Window:
    name: str
    start: float  # perf_counter seconds
    end: float


@dataclass
class PhaseStats:
    name: str
    seconds: float
    sent: int
    failed: Counter[str]
    p50_ms: float
    p99_ms: float
    max_ms: float
    max_lag_ms: float  # how late this generator sent a request: >> 1 ms means a busy client
    versions: Counter[str] = field(default_factory=Counter)

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())


@dataclass(frozen=True)
class Switch:
    """When the answers on one path moved from the old version to the new one."""

    path: str
    first_new_s: float | None  # seconds after the phase started; None: never seen
    last_old_s: float | None  # the last old answer after the first new one (a mixed window)
    old_after_new: int  # old answers that arrived after the first new one


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the value below which q of the values fall (no interpolation,
    so p99 of 100 samples is the second worst, not a blend)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def in_window(samples: list[Sample], w: Window) -> list[Sample]:
    # By due time: a request belongs to the phase in which it was meant to be sent.
    return [s for s in samples if w.start <= s.due < w.end]


def summarise(samples: list[Sample], w: Window) -> PhaseStats:
    mine = in_window(samples, w)
    latencies = [s.latency * 1000 for s in mine]
    return PhaseStats(
        name=w.name,
        seconds=w.end - w.start,
        sent=len(mine),
        failed=Counter(s.error for s in mine if s.error is not None),
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies, default=math.nan),
        max_lag_ms=max(((s.sent - s.due) * 1000 for s in mine), default=math.nan),
        versions=Counter(f"{s.path} {s.version}" for s in mine if s.version),
    )


def switch(samples: list[Sample], w: Window, path: str, old: str, new: str) -> Switch:
    """Order by arrival: what a user refreshing the page would have seen, and when."""
    mine = sorted((s for s in in_window(samples, w) if s.path == path and s.ok), key=lambda s: s.done)
    first_new = next((s.done for s in mine if s.version == new), None)
    if first_new is None:
        return Switch(path, None, None, 0)
    stale = [s.done for s in mine if s.version == old and s.done > first_new]
    return Switch(
        path,
        first_new - w.start,
        (max(stale) - w.start) if stale else None,
        len(stale),
    )
