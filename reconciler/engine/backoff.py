"""Watch mode's memory of one host's failures: exponential backoff with full jitter, reset
when the desired-state file changes, and what was already said about this revision (so a
quarantine, a pause, a hold or a string of failures is logged and notified once, not every pass)."""

from __future__ import annotations

import random
from dataclasses import dataclass

# A failing streak is announced as "failure" at its first failure and as "backoff" when it
# reaches this many: watch mode is then retrying less and less often.
BACKOFF_NOTICE_AFTER = 3


@dataclass
class Backoff:
    base: float = 2.0
    cap: float = 300.0
    revision: str = ""
    failures: int = 0
    until: float = 0.0  # monotonic time before which this revision is not retried
    parked: bool = False  # the file is invalid: wait for a new revision
    quarantine_reported: str = ""  # the revision whose quarantine was last logged
    pause_reported: str = ""  # the pause (its time) last logged
    hold_reported: str = ""  # the hold (its time) last logged and announced

    def reset_if_changed(self, revision: str) -> None:
        if revision != self.revision:
            self.revision, self.failures, self.until, self.parked = revision, 0, 0.0, False

    def failed(self, now: float) -> float:
        self.failures += 1
        delay = min(self.cap, self.base * 2 ** (self.failures - 1))
        delay = random.uniform(delay / 2, delay)  # noqa: S311 - jitter, not security
        self.until = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures, self.until = 0, 0.0
