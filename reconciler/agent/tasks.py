"""Release tasks (migrations and the like): one command run the way the backend runs (its
release folder, its environment file, its user; for an image, a container of it), as a
transient systemd unit, so it gets exactly what the service would get; its output comes back
to the run and goes into the journal, filed under the task's unit. A task that succeeded is
recorded per configuration and not run again."""

from __future__ import annotations

import os

from . import records
from .context import Context
from .database import sqlite_copy
from .fsops import decode, run
from .journal import to_journal
from .protocol import AgentError, Json
from .transient import transient_argv


def do_run_task(ctx: Context, a: Json) -> Json:
    done = records.load(ctx.state_dir, records.TASKS, {}).get(a["config"], {}).get(a["when"], 0)
    if done > a["index"]:
        return {"skipped": "this task succeeded for this configuration already"}
    unit = f"reconciler-task-{a['app']}-{os.getpid()}-{a['index']}"
    argv = transient_argv(a, unit, timeout=float(a["timeout"]))
    proc = run(argv, timeout=float(a["timeout"]) + 30)
    output = decode(proc.stdout + b"\n" + proc.stderr)
    to_journal(f"{unit}.service", os.path.basename(a["argv"][0]), output, failed=proc.returncode != 0)
    if proc.returncode != 0:
        restored = _restore(ctx, a)
        raise AgentError(
            f"task {a['when']}[{a['index']}] `{' '.join(a['argv'])}` exited {proc.returncode}"
            + ("; the database is back as the snapshot had it" if restored else ""),
            output[-2000:],
            code="task",
        )
    records.task_done(ctx.state_dir, a["config"], a["when"], a["index"] + 1)
    return {"output": output[-500:]}


def _restore(ctx: Context, a: Json) -> bool:
    """A failed migration may have half-changed the database: put back this apply's snapshot.
    The backup API copies into the live file under SQLite's own locks, so the release still
    serving keeps running (what it wrote since the snapshot, seconds ago, is lost)."""
    snapshot, database = a.get("snapshot"), a.get("database")
    if a["when"] != "before_switch" or not snapshot or not database or snapshot not in ctx.snapshots_taken:
        return False
    sqlite_copy(snapshot, database)
    return True
