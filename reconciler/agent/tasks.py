"""Release tasks (migrations and the like): one command run the way the backend runs (its
release folder, its environment file, its user; for an image, a container of it), as a
transient systemd unit, so it gets exactly what the service would get and its output goes to
the journal as well as to the run. A task that succeeded is recorded per configuration and
not run again."""

from __future__ import annotations

import os

from . import records
from .context import Context
from .database import sqlite_copy
from .fsops import decode, run, state_folder
from .protocol import AgentError, Json


def do_run_task(ctx: Context, a: Json) -> Json:
    done = records.load(ctx.state_dir, records.TASKS, {}).get(a["config"], {}).get(a["when"], 0)
    if done > a["index"]:
        return {"skipped": "this task succeeded for this configuration already"}
    argv = [
        "systemd-run",
        "--quiet",
        "--wait",
        "--pipe",
        "--collect",
        "--service-type=exec",
        f"--unit=reconciler-task-{a['app']}-{os.getpid()}-{a['index']}",
        f"--property=WorkingDirectory={a['workdir']}",
        f"--property=EnvironmentFile={a['env_file']}",
        f"--property=RuntimeMaxSec={int(a['timeout'])}",
        f"--setenv=RECONCILER_RELEASE={a['release']}",
    ]
    if a.get("user") and not a["container"]:
        argv.append(f"--property=User={a['user']}")
    if a["container"] and a.get("state"):
        # The service's unit has systemd make its state folder; a task may run before the
        # service ever started (a migration on the first deploy), and the runtime refuses to
        # bind a folder that does not exist (Docker would make it root's). The container
        # runs as the user (--user in its words), so the folder is made as systemd would.
        state_folder(a["state"], a.get("user"))
    argv += ["--", *a["container"], *a["argv"]]
    proc = run(argv, timeout=float(a["timeout"]) + 30)
    output = decode(proc.stdout + b"\n" + proc.stderr)
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
