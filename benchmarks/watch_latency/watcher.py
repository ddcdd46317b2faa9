"""`reconcile --watch` as a child process; its JSON-lines log is timestamped as it arrives.

Arrival time on this machine's clock (perf_counter) is what the latencies are measured with:
the log's own ISO timestamps are wall-clock and only millisecond-comparable at best.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.testhost import TestHost

REPO = Path(__file__).resolve().parents[2]


def save_atomically(path: Path, text: str) -> None:
    """How editors save: write a new file, then rename it over the old one."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    tmp.replace(path)


class WatchProcess:
    def __init__(self, file: Path, host: TestHost, *args: str) -> None:
        cmd = [sys.executable, "-m", "reconciler", "--watch", "--log-format", "json", "-f", str(file)]
        cmd += ["-i", str(host.key_path), "--known-hosts", str(host.known_hosts), *args]
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True, name="watch-log").start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            arrived = time.perf_counter()
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "raw", "line": line.rstrip()}
            event["_t"] = arrived
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events if e.get("event") == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 60) -> dict[str, Any]:
        """The count-th event called `name`; woken by each log line, not by polling."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.events if e.get("event") == name]
                if len(found) >= count:
                    return found[count - 1]
                if self.proc.poll() is not None:
                    raise RuntimeError(f"watch exited ({self.proc.returncode}): {self.events[-5:]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {name!r} #{count} within {timeout} s; last: {self.events[-5:]}")
                self._cond.wait(min(left, 0.5))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def __enter__(self) -> WatchProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
