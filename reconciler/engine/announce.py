"""From a pass's reports to the webhooks, and from the webhooks back to the host's history.

The engine says what happened (HostReport); this queues the notices it makes (never
waiting on a receiver), and later appends each delivery's outcome to the history of the
host it was about, so `reconcile status` shows whether anyone was told.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from reconciler.engine import gitinfo
from reconciler.engine.notify import Notice, Notifier, notice
from reconciler.engine.report import HostReport, events_of
from reconciler.errors import ReconcilerError
from reconciler.executors.base import Executor
from reconciler.log import log
from reconciler.spec.model import DesiredState


def announce(
    notifier: Notifier | None, reports: Iterable[HostReport], *, file: Path, mode: str, **extra: object
) -> list[Notice]:
    """Queue the notices these reports make; the commit is looked up only when there is one."""
    if notifier is None or not notifier.hooks:
        return []
    due = [(event, report) for report in reports for event in events_of(report)]
    if not due:
        return []
    revision = gitinfo.revision_of(file)
    items = [
        notice(event, report, commit=revision.commit, dirty=revision.dirty, mode=mode, **extra)
        for event, report in due
    ]
    for item in items:
        notifier.send(item)
    return items


def note_deliveries(
    notifier: Notifier | None, host: str, desired: DesiredState, executor: Executor | None
) -> None:
    """Append the outcomes of this host's deliveries to its history; a host that cannot be
    reached keeps them in the log only (they were logged when they happened)."""
    if notifier is None or executor is None:  # kept until there is a connection to write with
        return
    deliveries = notifier.take(host)
    if not deliveries:
        return
    from reconciler.engine.hostrecords import add_notes

    try:
        add_notes(executor, desired, [d.note() for d in deliveries])
    except ReconcilerError as exc:
        log.warning("notification outcomes not written to the host's history", host=host, error=str(exc))
