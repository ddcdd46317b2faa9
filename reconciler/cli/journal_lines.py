"""How `reconcile logs` prints a journal entry (journalctl's JSON, one object a line): as text,

    2025-05-01 12:00:01 choiros-backend[4242]: 127.0.0.1 "GET /api/notes HTTP/1.1" 200
    2025-05-01 12:00:05 choiros-backend systemd[1]: Stopping choiros-backend.service - choiros backend...

(the time in this machine's time zone; systemd's own lines about a unit name the unit and
systemd, a release task's output the task's unit and its program), or, with --json, as
journald wrote it, with the host's name added across a fleet.
"""

from __future__ import annotations

import json
import time
from typing import Any


def _text(value: Any) -> str:
    """A journal field as text: journald sends bytes that are not UTF-8 (and very long values)
    as a list of numbers, and a field that occurs more than once as a list of its values."""
    if isinstance(value, list):
        if all(isinstance(v, int) for v in value):
            return bytes(v & 0xFF for v in value).decode("utf-8", "replace")
        return " ".join(_text(v) for v in value)
    return "" if value is None else str(value)


def _unit(name: str) -> str:
    return name[: -len(".service")] if name.endswith(".service") else name


def text_line(raw: str) -> str:
    try:
        entry = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(entry, dict):
        return raw
    stamp = _text(entry.get("__REALTIME_TIMESTAMP"))
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(stamp) / 1e6)) if stamp.isdigit() else "?"
    message = _text(entry.get("MESSAGE")).rstrip("\n")
    pid = _text(entry.get("_PID"))
    own = _text(entry.get("_SYSTEMD_UNIT"))
    about = _text(entry.get("UNIT"))
    told = _text(entry.get("OBJECT_SYSTEMD_UNIT"))  # a task's output, filed by the agent
    if told:
        return f"{when} {_unit(told)} {_text(entry.get('SYSLOG_IDENTIFIER')) or '?'}: {message}"
    if about and (pid == "1" or not own or own == "init.scope"):
        return f"{when} {_unit(about)} systemd[{pid or 1}]: {message}"
    source = _unit(own) if own else _text(entry.get("SYSLOG_IDENTIFIER")) or "?"
    return f"{when} {source}[{pid}]: {message}" if pid else f"{when} {source}: {message}"


def host_json(raw: str, host: str) -> str:
    """A journal entry with the host it came from (`host`: lower case, so it can be no
    journald field), for the lines of a fleet."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return json.dumps({"host": host, "MESSAGE": raw})
    return json.dumps({"host": host, **entry}) if isinstance(entry, dict) else raw
