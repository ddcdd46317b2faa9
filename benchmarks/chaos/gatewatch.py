"""The host's gate records over time, and whether the process that gave an answer had one.

A poller reads the app's gates.json on the host every `interval` seconds, through the host's
root file system from this machine (a file read, no exec, no SSH), and keeps what it saw as
segments: runs of polls that saw the same set of gated invocations.

An answer came from process X at some instant between the request's `sent` and `done`. Its
gate record's presence is known at each poll's read, and changes between two polls at an
unknown instant. So an answer is classified:

- gated: the last poll that finished before `sent`, the first that started after `done`, and
  every poll between them saw X's record;
- ungated: all of those polls saw no record of X;
- uncertain: X's record appeared (or went) between those two polls, so within one polling
  interval (plus the request's own duration) of the answer. Never counted either way: the
  report gives their number, which the polling interval bounds.

A poll that failed (the host rebooting) counts as a poll that saw nothing known: answers
around it are uncertain, never ungated by default.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

GATED, UNGATED, UNCERTAIN = "gated", "ungated", "uncertain"


@dataclass
class Segment:
    """Consecutive polls that saw the same gated invocations (None: the read failed)."""

    seen: frozenset[str] | None
    first_start: float
    first_end: float
    last_start: float
    last_end: float
    polls: int = 1


class GateHistory:
    """Segments in time order, and the questions the analysis asks of them."""

    def __init__(self, segments: list[Segment]) -> None:
        self.segments = segments
        self._first_end = [s.first_end for s in segments]
        self._last_start = [s.last_start for s in segments]

    def classify(self, invocation: str, sent: float, done: float) -> str:
        # The last segment whose first poll finished before `sent` ...
        b = bisect.bisect_right(self._first_end, sent) - 1
        # ... and the first whose last poll started after `done`.
        e = bisect.bisect_left(self._last_start, done)
        if b < 0 or e >= len(self.segments):
            return UNCERTAIN
        states = set()
        for segment in self.segments[b : e + 1]:
            if segment.seen is None:
                return UNCERTAIN
            states.add(invocation in segment.seen)
        if len(states) != 1:
            return UNCERTAIN
        return GATED if states.pop() else UNGATED

    def ever_gated(self) -> set[str]:
        out: set[str] = set()
        for segment in self.segments:
            out |= segment.seen or set()
        return out

    def first_gated(self, invocation: str) -> float | None:
        """When a poll first saw this invocation's record (its end)."""
        for segment in self.segments:
            if segment.seen is not None and invocation in segment.seen:
                return segment.first_end
        return None

    def longest_gap(self) -> float:
        """The longest time between two successful polls' reads (bounds the uncertainty)."""
        gap, previous = 0.0, None
        for segment in self.segments:
            if segment.seen is None:
                continue
            if previous is not None:
                gap = max(gap, segment.first_end - previous)
            previous = segment.last_start
        return gap


def invocations_in(raw: bytes | None) -> frozenset[str]:
    data = json.loads(raw or b"{}")
    if not isinstance(data, dict):
        raise ValueError("gates.json is not an object")
    return frozenset(
        str(r["invocation"]) for r in data.values() if isinstance(r, dict) and r.get("invocation")
    )


class GateWatch:
    """Polls `read()` (the gate records' bytes, None when absent) every `interval` seconds."""

    def __init__(self, read: Callable[[], bytes | None], interval: float) -> None:
        self.read = read
        self.interval = interval
        self.segments: list[Segment] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.polls = 0
        self.failed_polls = 0
        self.thread = threading.Thread(target=self._loop, name="chaos-gates", daemon=True)

    def start(self) -> GateWatch:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(10)
        self.poll()  # one read after the last answer, so that answer can be decided

    def poll(self) -> None:
        start = time.monotonic()
        try:
            seen: frozenset[str] | None = invocations_in(self.read())
        except Exception:  # the host rebooting, a file being replaced: nothing known
            seen = None
        end = time.monotonic()
        with self.lock:
            self.polls += 1
            self.failed_polls += seen is None
            last = self.segments[-1] if self.segments else None
            if last is not None and last.seen == seen:
                last.last_start, last.last_end = start, end
                last.polls += 1
            else:
                self.segments.append(Segment(seen, start, end, start, end))

    def _loop(self) -> None:
        while not self.stopping.is_set():
            start = time.monotonic()
            self.poll()
            self.stopping.wait(max(0.0, self.interval - (time.monotonic() - start)))

    def history(self) -> GateHistory:
        with self.lock:
            return GateHistory([Segment(**vars(s)) for s in self.segments])
