"""How the host agent travels: its modules' sources, compressed, on stdin of one `python3 -c`
exec.

Nothing is installed on the host, every request is a single round trip, and both SSH
transports send exactly the same bytes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

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


# The agent needs root, and whether the login is root is known on the host only (the user
# may come from ssh_config, a Match block, a ProxyJump chain). So the host decides: root runs
# the agent directly, anyone else through `sudo -n`, which fails at once instead of prompting.
# A `sh -c` script with the command as its arguments: the user's login shell only sees
# single-quoted words (as before), and the command is written once.
AS_ROOT = (
    "sh -c '"
    '[ "$(id -u)" = 0 ] && exec "$@"; '
    'echo "reconciler: connected as $(id -un) (uid $(id -u)), not root: sudo -n" >&2; '
    'command -v sudo >/dev/null || { echo "reconciler: sudo is not installed" >&2; exit 126; }; '
    'exec sudo -n "$@"'
    "' reconcile "
)
NOT_ROOT = re.compile(r"reconciler: connected as (\S+) \(uid (\d+)\), not root")
SUDO_REFUSED = ("password is required", "not in the sudoers", "may not run sudo", "not allowed to execute")


def bootstrap_command(python: str, sudo: bool | None = None, *, resident: bool = False) -> str:
    """The exec that runs the agent. sudo: None lets the host decide (above); True always
    prefixes `sudo -n`; False never does. resident: the agent serves request after request
    on this one exec (agent/session.py) instead of answering one."""
    blob = agent_blob()
    entry = (
        "from hostagent.session import serve;serve()"
        if resident
        else "from hostagent.main import main;main()"
    )
    code = (
        f"import sys,zlib,json;S=json.loads(zlib.decompress(sys.stdin.buffer.read({len(blob)})));"
        f'exec(S["boot"]);install(S["modules"]);{entry}'
    )
    prefix = AS_ROOT if sudo is None else "sudo -n " if sudo else ""
    return f"{prefix}{python} -c '{code}'"


# For a command whose output is the user's (`reconcile exec`): the same decision, saying
# nothing unless sudo is missing.
AS_ROOT_QUIET = (
    "sh -c '"
    '[ "$(id -u)" = 0 ] && exec "$@"; '
    "command -v sudo >/dev/null || "
    '{ echo "reconciler: connected as $(id -un), not root, and sudo is not installed" >&2; exit 126; }; '
    'exec sudo -n "$@"'
    "' reconcile "
)


def attached_command(python: str, sudo: bool | None, request: dict[str, Any]) -> str:
    """The exec that runs an attached request (agent/attach.py): its stdin, stdout and stderr
    are the command's, so the agent (only the modules it needs) and the request travel in
    one argument, base64 of the compressed JSON, instead of on stdin."""
    from reconciler.agent.attach import MODULES

    sources = {name: (AGENT_DIR / f"{name}.py").read_text(encoding="utf-8") for name in MODULES}
    sources["__init__"] = ""  # the package's docstring is all it has
    boot = (AGENT_DIR / "boot.py").read_text(encoding="utf-8")
    blob = base64.b64encode(
        zlib.compress(json.dumps({"boot": boot, "modules": sources, "request": request}).encode(), 9)
    ).decode()
    code = (
        "import sys,zlib,json,base64;S=json.loads(zlib.decompress(base64.b64decode(sys.argv[1])));"
        'exec(S["boot"]);install(S["modules"]);from hostagent.attach import main;main(S["request"])'
    )
    prefix = AS_ROOT_QUIET if sudo is None else "sudo -n " if sudo else ""
    return f"{prefix}{python} -c '{code}' {blob}"


class ResidentAgent:
    """The controller's end of a resident agent: requests as JSON lines on one channel, each
    answered by its events and one final event. `request` returns None when the agent is gone
    (the channel closed): the caller starts a new one, or falls back to a one-shot exec."""

    def __init__(
        self, write: Callable[[bytes], None], lines: Iterator[bytes], close: Callable[[], None]
    ) -> None:
        self.write = write
        self.lines = lines
        self.close = close
        self.alive = True

    def request(self, request: dict[str, Any], on_event: OnEvent | None) -> Event | None:
        try:
            self.write(json.dumps(request).encode() + b"\n")
            final = read_events(self.lines, on_event)
        except (OSError, EOFError, ValueError):
            final = None
        if final is None:
            self.alive = False
        return final

    def cancel(self) -> None:
        with contextlib.suppress(OSError, EOFError, ValueError):
            self.write(b'{"cancel": true}\n')


class ResidentSlot:
    """An executor's resident agent, started on first use. A request that only reads is sent
    again, once, to a new agent when the old one went away; an apply it took may still be
    running on the host, so that is an error instead."""

    def __init__(self, start: Callable[[], ResidentAgent], host: str) -> None:
        self.start = start
        self.host = host
        self.agent: ResidentAgent | None = None

    def request(self, request: dict[str, Any], on_event: OnEvent | None) -> Event:
        applying = request.get("op") == "apply"
        for _ in range(1 if applying else 2):
            self.agent = self.agent or self.start()
            final = self.agent.request(request, on_event)
            if final is not None:
                return final
            self.agent = None
        raise TargetError(
            f"the connection to {self.host} ended before the host answered",
            hint="the next run will converge from wherever this one stopped"
            if applying
            else "check that the host is up and sshd accepts new sessions",
        )

    def cancel(self) -> None:
        if self.agent is not None:
            self.agent.cancel()

    def close(self) -> None:
        if self.agent is not None:
            with contextlib.suppress(OSError, EOFError):
                self.agent.close()
            self.agent = None


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
    who = NOT_ROOT.search(text)
    if who is not None:
        user, uid = who.groups()
        last = text.splitlines()[-1]
        if "sudo is not installed" in last or any(m in last for m in SUDO_REFUSED):
            return TargetError(
                f"connected to {host} as {user} (uid {uid}) without root, and "
                + ("sudo is not installed" if "not installed" in last else f"sudo -n refused: {last}"),
                hint=f"connect as root or give {user} passwordless sudo",
            )
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
