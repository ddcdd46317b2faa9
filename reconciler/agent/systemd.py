"""systemd as the agent sees it: unit properties, what the running process really uses, and
systemctl verbs with the journal attached to failures.
"""

from __future__ import annotations

import contextlib
import os

from . import systemd_bus
from .fsops import decode, run
from .protocol import ENV_PREFIX, AgentError, Json

# (interface, property): MainPID and NRestarts are a service's, the rest any unit's.
UNIT_PROPS = (
    ("Unit", "LoadState"),
    ("Unit", "ActiveState"),
    ("Unit", "SubState"),
    ("Unit", "UnitFileState"),
    ("Unit", "NeedDaemonReload"),
    ("Service", "MainPID"),
    ("Unit", "FragmentPath"),
    ("Unit", "InvocationID"),
    ("Service", "NRestarts"),
)


def systemctl_show(units: list[str]) -> dict[str, Json]:
    """Each unit's facts: from systemd's bus directly when it answers, else `systemctl show`."""
    if not units:
        return {}
    try:
        shown = systemd_bus.show(units, UNIT_PROPS)
    except systemd_bus.BusUnavailable:
        shown = systemctl_show_text(units)
    return {unit: unit_info(shown[unit]) for unit in units}


def systemctl_show_text(units: list[str]) -> dict[str, dict[str, str]]:
    """{unit: {property: value}} as `systemctl show` prints them."""
    props = ",".join(prop for _, prop in UNIT_PROPS)
    proc = run(["systemctl", "show", "--no-pager", "-p", props, "--", *units], timeout=30)
    if proc.returncode != 0:
        raise AgentError("systemctl show failed", decode(proc.stderr), code="systemd")
    blocks = decode(proc.stdout).split("\n\n")
    out: dict[str, dict[str, str]] = {}
    for unit, block in zip(units, blocks):
        props_of: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition("=")
            props_of[key] = value
        out[unit] = props_of
    return out


def unit_info(props: Json) -> Json:
    pid = int(props.get("MainPID") or 0)
    restarts = props.get("NRestarts") or "0"
    info: Json = {
        "load": props.get("LoadState", ""),
        "active": props.get("ActiveState", ""),
        "sub": props.get("SubState", ""),
        "enabled": props.get("UnitFileState", ""),
        "need_daemon_reload": props.get("NeedDaemonReload") == "yes",
        "main_pid": pid,
        "fragment": props.get("FragmentPath", ""),
        "invocation": identity(props.get("InvocationID", ""), pid),
        "restarts": int(restarts) if restarts.isdigit() else 0,
        "cwd": None,
        "environ": {},
    }
    if pid > 0:
        info.update(process_facts(pid))
    return info


def unit_state(unit: str) -> Json:
    """One unit's facts, read again at the moment an action needs them."""
    return systemctl_show([unit])[unit]


def identity(invocation: str, pid: int) -> str:
    """What names one start of a unit: systemd's InvocationID, new at every start, automatic
    restarts included. Without one (an old systemd), the main PID and its start time."""
    if invocation:
        return invocation
    if pid <= 0:
        return ""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            started = fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""
    return f"pid-{pid}-{started}"


def markers(pid: int) -> Json:
    out: Json = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/environ", "rb") as fh:
        for item in fh.read().split(b"\0"):
            key, _, value = item.partition(b"=")
            name = key.decode("ascii", "replace")
            if name.startswith(ENV_PREFIX):
                out[name] = value.decode("utf-8", "replace")
    return out


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
            return [int(x) for x in fh.read().split()]
    except (OSError, ValueError):
        return []


def process_facts(pid: int) -> Json:
    """What the running process really uses: its working directory and our markers in its env.

    A container's main PID is conmon, whose environment is not the container's: then the
    markers are read from the first descendant that has them (the container's init), and the
    working directory, which is inside the container, is not reported."""
    facts: Json = {"cwd": None, "environ": markers(pid)}
    if facts["environ"]:
        with contextlib.suppress(OSError):
            facts["cwd"] = os.readlink(f"/proc/{pid}/cwd")
        return facts
    queue = children(pid)
    for _ in range(16):  # a short, bounded search: conmon -> init -> app
        if not queue:
            break
        child = queue.pop(0)
        found = markers(child)
        if found:
            facts["environ"] = found
            return facts
        queue += children(child)
    with contextlib.suppress(OSError):
        facts["cwd"] = os.readlink(f"/proc/{pid}/cwd")
    return facts


def journal_tail(unit: str, lines: int = 20) -> str:
    proc = run(["journalctl", "--no-pager", "-o", "short-precise", "-n", str(lines), "-u", unit], timeout=20)
    return f"last journal lines of {unit}:\n{decode(proc.stdout)}"


def systemctl(verb: str, unit: str | None = None) -> None:
    argv = ["systemctl", verb] + (["--", unit] if unit else [])
    proc = run(argv, timeout=180)
    if proc.returncode != 0:
        detail = decode(proc.stderr)
        if unit and verb in ("start", "restart", "reload", "reload-or-restart"):
            detail += "\n" + journal_tail(unit)
        raise AgentError(f"systemctl {verb} {unit or ''} failed".strip(), detail, code="systemd")


def stop_unit(unit: str) -> None:
    """Stop, and clear a failed state: a unit stopped on purpose is inactive, not failed."""
    systemctl("stop", unit)
    run(["systemctl", "reset-failed", "--", unit], timeout=30)


def need_daemon_reload(units: list[str]) -> bool:
    return any(info["need_daemon_reload"] for info in systemctl_show(units).values())
