"""SQLite snapshots (online backup API) before a switch, and restores on the way back."""

from __future__ import annotations

import contextlib
import os

from .context import Context
from .fsops import fsync_dir, makedirs
from .protocol import Json
from .systemd import systemctl


def sqlite_copy(source: str, dest: str) -> None:
    """SQLite's online backup API: a consistent copy even while another process writes."""
    import sqlite3

    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(dest, timeout=30)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def do_snapshot_database(ctx: Context, a: Json) -> Json:
    database, snapshot = a["database"], a["snapshot"]
    if not os.path.exists(database):
        return {"skipped": "no database yet"}
    folder = os.path.dirname(snapshot)
    makedirs(folder, 0o700)
    tmp = os.path.join(folder, f".{os.path.basename(snapshot)}.tmp-{os.getpid()}")
    try:
        sqlite_copy(database, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, snapshot)  # a snapshot is whole or absent
        fsync_dir(folder)
        ctx.snapshots_taken.add(snapshot)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return {"bytes": os.path.getsize(snapshot)}


def do_restore_database(ctx: Context, a: Json) -> Json:
    if a["only_if_taken"] and a["snapshot"] not in ctx.snapshots_taken:
        # A rollback restores only the snapshot its own deploy took: an older one would lose
        # what the release kept writing since.
        return {"skipped": "no snapshot was taken by this deploy"}
    for unit in a["units"]:
        systemctl("stop", unit)  # nothing may write while the database is replaced
    sqlite_copy(a["snapshot"], a["database"])
    return {}
