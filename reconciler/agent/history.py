"""The host's history: one JSON line per apply, pause, resume, notification outcome or one-off
command (`reconcile exec`), in <state>/history.jsonl (0640). `reconcile status` reads it back."""

from __future__ import annotations

import json
import os

from .fsops import atomic_write
from .protocol import Json, check_request


def append_history(state_dir: str, record: Json, keep: int = 1000, *, trim: bool = True) -> None:
    """One record, appended in a single write. `trim`: keep the file to its newest `keep`
    records, by rewriting it: only a writer holding the host lock may (another append could
    land between the read and the rename and be lost)."""
    path = os.path.join(state_dir, "history.jsonl")
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, line)
        os.fsync(fd)
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if trim and size > keep * 4096:  # trim rarely, keeping the newest records
        with open(path, "rb") as fh:
            lines = fh.readlines()[-keep:]
        atomic_write(path, b"".join(lines), 0o640)


def history(request: Json) -> Json:
    check_request(request)
    path = os.path.join(request["state"], "history.jsonl")
    limit = int(request.get("limit") or 20)
    try:
        with open(path, "rb") as fh:
            lines = fh.readlines()[-limit:]
    except FileNotFoundError:
        lines = []
    entries = []
    unreadable = 0
    for line in lines:
        try:
            entries.append(json.loads(line))
        except ValueError:
            unreadable += 1
    from . import records  # not at the top: `reconcile exec` appends with fewer modules sent

    quarantine: Json = {}
    maintenance: Json = {}
    errors = []
    try:
        quarantine = records.load(request["state"], records.QUARANTINE, {})
        maintenance = records.load(request["state"], records.MAINTENANCE, {})
    except records.StateFileError as exc:
        errors.append(str(exc))
    if unreadable:
        errors.append(f"{path}: {unreadable} unreadable line(s) skipped")
    return {
        "event": "result",
        "ok": True,
        "records": entries,
        "quarantine": quarantine,
        "maintenance": maintenance,
        "errors": errors,
    }
