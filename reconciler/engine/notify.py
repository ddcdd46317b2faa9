"""Posting events to the webhooks in `notify:`, from the machine running reconcile.

Posting never blocks or fails a deploy: `send` only queues. Each webhook has its own worker
thread, so a receiver that hangs delays no other; each attempt has a bounded timeout, and a
timeout, a refused connection, a 5xx or a 429 is retried with exponential backoff. Every
delivery's outcome is logged and kept for the host's history (`take`); `wait` lets --once
give deliveries in flight a bounded time before the process exits. Only the standard
library is used: urllib is imported by the worker, on the first event.
"""

from __future__ import annotations

import contextlib
import json
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reconciler import __version__
from reconciler.engine.report import HostReport
from reconciler.log import log
from reconciler.spec.model import Webhook

QUEUE_SIZE = 100
MAX_ERROR = 2000  # characters of an error message a payload carries


@dataclass(frozen=True)
class Notice:
    """One event for the webhooks: `fields` is the JSON body; `text` the Slack-style line."""

    event: str
    host: str
    fields: dict[str, Any]
    text: str


@dataclass(frozen=True)
class Delivery:
    """What became of one notice at one webhook: logged, and noted in the host's history."""

    host: str
    event: str
    webhook: str
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None

    def note(self) -> dict[str, Any]:
        out = {"kind": "notify", "event": self.event, "webhook": self.webhook, "ok": self.ok}
        out |= {"attempts": self.attempts, "status": self.status}
        return out | ({"error": self.error} if self.error else {})


def notice(
    event: str, report: HostReport, *, commit: str | None, dirty: bool, mode: str, **extra: Any
) -> Notice:
    error = report.error if report.error is None else report.error[:MAX_ERROR]
    fields: dict[str, Any] = {
        "event": event,
        "app": report.app,
        "host": report.host,
        "target": report.target,
        "result": report.result,
        "version": report.version,
        "serving": report.serving,
        "serving_since": report.serving_since,
        "previous": report.previous,
        "rolled_back_to": report.rolled_back_to,
        "hold": _hold_fields(report),
        "commit": commit,
        "dirty": dirty,
        "actions": [dict(a) for a in report.actions],
        "error": error,
        "mode": mode,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reconciler": __version__,
        **extra,
    }
    return Notice(event, report.host, fields, _text(event, fields))


def _hold_fields(report: HostReport) -> dict[str, Any] | None:
    hold = report.hold
    if hold is None:
        return None
    return {"version": hold.version, "by": hold.by, "at": hold.at, "reason": hold.reason, "from": hold.origin}


def watch_notice(event: str, app: str, host: str, error: str, *, mode: str = "watch", **extra: Any) -> Notice:
    """An event about watch mode itself (backing off, giving up), with or without a host."""
    fields: dict[str, Any] = {
        "event": event,
        "app": app,
        "host": host,
        "error": error[:MAX_ERROR],
        "mode": mode,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reconciler": __version__,
        **extra,
    }
    return Notice(event, host, fields, _text(event, fields))


def _text(event: str, f: dict[str, Any]) -> str:
    """One Slack-compatible paragraph (mrkdwn): what happened, where, and the first error line."""
    app, host, version = f.get("app"), f.get("host"), f.get("version")
    commit = f" (commit `{f['commit'][:12]}`)" if f.get("commit") else ""
    n = len(f.get("actions") or [])
    head = {
        "deploy": f":rocket: *{app} {version}* deployed on *{host}*: {n} actions{commit}",
        "drift_corrected": f":wrench: *{app}* on *{host}*: drift corrected, {n} actions put back {version}",
        "rollback": f":rotating_light: *{app} {version}* failed on *{host}* and was rolled back; "
        f"*{f.get('rolled_back_to') or f.get('serving')}* serves again{commit}",
        "failure": f":x: *{app} {version}* on *{host}*: the run failed{commit}",
        "quarantine": f":no_entry: *{app} {version}* on *{host}* is quarantined (it failed before) and is "
        f"not deployed; *{f.get('serving') or 'nothing'}* serves",
        "backoff": f":hourglass: watch mode keeps failing on *{host}* ({f.get('failures')} times in a row); "
        f"retrying every {f.get('retry_in_s')} s",
        "gave_up": f":warning: watch mode stopped trying *{app}* on *{host}* until the desired state changes",
        "held": f":pushpin: *{app}* on *{host}* is held at *{f.get('serving') or '?'}* by hand"
        f"{_hold_text(f.get('hold'))}; {version} is not deployed until `reconcile resume` or a new commit",
    }.get(event, f"{event}: *{app}* on *{host}*")
    error = (f.get("error") or "").strip().splitlines()
    return head + (f"\n```{error[0][:500]}```" if error else "")


def _hold_text(hold: Any) -> str:
    if not isinstance(hold, dict):
        return ""
    why = f": {hold['reason']}" if hold.get("reason") else ""
    return f" ({hold.get('by', '?')}{why})"


def body(hook: Webhook, item: Notice) -> bytes:
    if hook.format == "slack":
        return json.dumps({"text": item.text}).encode()
    return json.dumps(item.fields).encode()


class _Worker:
    """One webhook's queue and thread; posts one notice at a time, retrying with backoff."""

    def __init__(
        self, hook: Webhook, done: Callable[[Delivery], None], sleep: Callable[[float], Any]
    ) -> None:
        self.hook = hook
        self.done = done
        self.sleep = sleep
        self.queue: queue.Queue[Notice | None] = queue.Queue(QUEUE_SIZE)
        self.busy: Notice | None = None
        self.thread = threading.Thread(target=self.run, name=f"notify-{hook.label}", daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            self.busy = item
            try:
                self.done(self.deliver(item))
            finally:
                self.busy = None
                self.queue.task_done()

    def deliver(self, item: Notice) -> Delivery:
        hook = self.hook
        status: int | None = None
        error = ""
        for attempt in range(1, hook.retries + 2):
            status, error, retry = post(hook, body(hook, item))
            if status is not None and 200 <= status < 300:
                log.info(
                    "notified", notification=item.event, host=item.host, webhook=hook.label, attempts=attempt
                )
                return Delivery(item.host, item.event, hook.label, True, attempt, status)
            if not retry or attempt > hook.retries:
                break
            delay = min(30.0, 2.0 ** (attempt - 1)) * random.uniform(0.8, 1.2)  # noqa: S311 - jitter
            log.debug(
                "notification failed; retrying", webhook=hook.label, error=error, retry_in_s=round(delay, 1)
            )
            self.sleep(delay)
        log.warning(
            "notification not delivered",
            notification=item.event,
            host=item.host,
            webhook=hook.label,
            error=error,
        )
        return Delivery(item.host, item.event, hook.label, False, attempt, status, error)


def post(hook: Webhook, data: bytes) -> tuple[int | None, str, bool]:
    """One POST: (HTTP status or None, what went wrong, whether to try again)."""
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json", "User-Agent": f"reconciler/{__version__}"}
    if hook.header is not None:
        headers[hook.header[0]] = hook.header[1]
    request = urllib.request.Request(hook.url, data=data, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=hook.timeout) as answer:  # noqa: S310 - http(s) only
            return answer.status, "", False
    except urllib.error.HTTPError as exc:
        retry = exc.code >= 500 or exc.code in (408, 429)
        return exc.code, f"HTTP {exc.code} {exc.reason}", retry
    except (OSError, ValueError) as exc:  # timeouts, refused connections, TLS, DNS
        reason = getattr(exc, "reason", None) or exc
        return None, f"{type(reason).__name__}: {reason}"[:300], True


class Notifier:
    """Queues notices for every webhook that wants their event; never blocks the caller."""

    def __init__(self, hooks: tuple[Webhook, ...], *, sleep: Callable[[float], Any] = time.sleep) -> None:
        self.hooks = hooks
        self.lock = threading.Lock()
        self.outcomes: list[Delivery] = []
        self.workers = [_Worker(h, self._done, sleep) for h in hooks]

    def _done(self, delivery: Delivery) -> None:
        with self.lock:
            self.outcomes.append(delivery)

    def send(self, item: Notice) -> None:
        for worker in self.workers:
            if item.event not in worker.hook.events:
                continue
            try:
                worker.queue.put_nowait(item)
            except queue.Full:
                why = f"more than {QUEUE_SIZE} notices waiting: this one was dropped"
                self._done(Delivery(item.host, item.event, worker.hook.label, False, 0, None, why))
                log.warning("notification dropped", webhook=worker.hook.label, notification=item.event)

    def wait(self, timeout: float) -> None:
        """Give queued and in-flight deliveries up to `timeout` seconds; what is left is
        recorded as not delivered (the worker threads die with the process)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(w.busy or not w.queue.empty() for w in self.workers):
            time.sleep(0.02)
        for worker in self.workers:
            left = [worker.busy] if worker.busy else []
            while True:
                try:
                    item = worker.queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    left.append(item)
            for item in left:
                why = "still being delivered when reconcile exited"
                self._done(Delivery(item.host, item.event, worker.hook.label, False, 0, None, why))

    def take(self, host: str | None = None) -> list[Delivery]:
        """Outcomes not taken yet (of one host, or all), to note in the host's history."""
        with self.lock:
            taken = [d for d in self.outcomes if host is None or d.host == host]
            self.outcomes = [d for d in self.outcomes if not (host is None or d.host == host)]
        return taken

    def close(self) -> None:
        """Let each worker finish what is queued, then stop (a replaced notifier in watch mode)."""
        for worker in self.workers:
            with contextlib.suppress(queue.Full):
                worker.queue.put_nowait(None)
