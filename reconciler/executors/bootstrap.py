"""How the host agent travels: its modules' sources, compressed, on stdin of one `python3 -c`
exec.

Nothing is installed on the host, every request is a single round trip, and both SSH
transports send exactly the same bytes.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from reconciler.errors import TargetError
from reconciler.executors.base import Event, OnEvent

# Sent as source, never imported here: the client needs its bytes, not its code.
AGENT_DIR = Path(__file__).resolve().parent.parent / "agent"


@cache
def agent_blob() -> bytes:
    """{"boot": boot.py's source, "modules": {name: source}}, JSON, zlib-compressed."""
    modules = {p.stem: p.read_text(encoding="utf-8") for p in sorted(AGENT_DIR.glob("*.py"))}
    boot = modules.pop("boot")
    return zlib.compress(json.dumps({"boot": boot, "modules": modules}).encode(), 9)


def bootstrap_command(python: str, sudo: bool) -> str:
    blob = agent_blob()
    code = (
        f"import sys,zlib,json;S=json.loads(zlib.decompress(sys.stdin.buffer.read({len(blob)})));"
        'exec(S["boot"]);install(S["modules"]);from hostagent.main import main;main()'
    )
    prefix = "sudo -n " if sudo else ""
    return f"{prefix}{python} -c '{code}'"


def read_events(lines: Iterable[bytes], on_event: OnEvent | None) -> Event | None:
    """The agent's answer: JSON lines of progress (passed to on_event), then one final
    "result" or "error" event, returned. None when the stream ends without one."""
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # not ours: e.g. a login banner printed by a shell profile
        if event.get("event") in ("result", "error"):
            return event  # type: ignore[no-any-return]
        if on_event is not None:
            on_event(event)
    return None


def no_answer(host: str, python: str, code: int, stderr: str) -> TargetError:
    """Why the agent ended without a final event, from its exit status and what it printed."""
    text = stderr.strip()
    if code == 127 or "not found" in text:
        return TargetError(
            f"{python} is not available on {host}",
            hint="the reconciler runs a small Python (>= 3.9) program on the host: install python3",
        )
    if "sudo" in text and "password" in text:
        return TargetError(
            f"sudo on {host} wants a password",
            hint="allow passwordless sudo for the deploy user, or connect as root",
        )
    return TargetError(
        f"the connection to {host} ended before the host answered (exit {code})",
        hint=text[-500:] or "the next run will converge from wherever this one stopped",
    )
