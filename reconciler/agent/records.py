"""The facts the reconciler keeps on the host, in its state folder (0700):

gates.json       unit -> the process that last passed its health gate: its invocation, the
                 release and configuration it runs. A process with no matching record has
                 not been gated, whatever happened to the run that started it.
good.json        the last few complete states that passed (newest first): every file and
                 link they consist of, the units and their gates. Rollback restores one.
quarantine.json  configuration fingerprint -> what failed and why. A healthy configuration
                 is never keyed here, so restoring it needs no flag.
paused.json      who paused the reconciler on this host, when and why (`reconcile pause`):
                 while it exists no run changes anything unless forced.
held.json        the good state `reconcile rollback` went back to, who did it, when, why, from
                 which release, and what the desired file named then: runs keep the host
                 there until the file names something else or `reconcile resume`.

A state file that cannot be read is reported by name with what to do, never guessed at: the
planner refuses to act on a host whose safety records it cannot trust.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .fsops import atomic_write, now
from .gates import gate_holds
from .protocol import Json

GATES = "gates.json"
GOOD = "good.json"
QUARANTINE = "quarantine.json"
TASKS = "tasks.json"
MAINTENANCE = "maintenance.json"
PAUSE = "paused.json"
HOLD = "held.json"
GOOD_KEPT = 5

_WHAT = {
    GATES: "which running processes passed their health gates; removing it makes the next run "
    "gate every running process again",
    GOOD: "the last states that passed; removing it leaves nothing to roll back to until the "
    "next successful run",
    QUARANTINE: "which configurations failed; removing it lets them be tried again",
    TASKS: "which release tasks succeeded; removing it runs them again on the next deploy",
    MAINTENANCE: "that maintenance mode was switched on by hand; removing it switches it off",
    PAUSE: "that someone paused the reconciler here (`reconcile resume` removes it)",
    HOLD: "that `reconcile rollback` holds the host at an earlier state (`reconcile resume` removes it)",
}


class StateFileError(Exception):
    def __init__(self, path: str, problem: str) -> None:
        name = os.path.basename(path)
        if os.path.basename(os.path.dirname(path)) == "releases":
            what = f"what release {name[: -len('.json')]} was made from (checksum, image)"
        else:
            what = _WHAT.get(name, "reconciler state")
        super().__init__(f"{path} {problem}: it records {what}. Move it away and run again")
        self.path = path


def load(state_dir: str, name: str, empty: Any) -> Any:
    """The parsed file, `empty` when it does not exist; StateFileError when it is unreadable or
    not of the shape it must have."""
    path = os.path.join(state_dir, name)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return empty
    except OSError as exc:
        raise StateFileError(path, f"cannot be read ({exc.strerror})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise StateFileError(path, "is not valid JSON (truncated or edited?)") from None
    if not isinstance(data, type(empty)):
        raise StateFileError(path, f"holds a {type(data).__name__}, not a {type(empty).__name__}")
    return data


def save(state_dir: str, name: str, data: Any) -> None:
    atomic_write(os.path.join(state_dir, name), json.dumps(data, sort_keys=True).encode(), 0o600)


def record_gate(state_dir: str, unit: str, record: Json) -> None:
    gates = load(state_dir, GATES, {})
    gates[unit] = dict(record, at=now())
    save(state_dir, GATES, gates)


def record_good(state_dir: str, record: Json) -> None:
    """Newest first; a configuration appears once (its newest record), at most GOOD_KEPT.

    `since` is when this release started serving: carried over from the newest record when
    that one ran the same release (a configuration change is not a new release), so status
    can say "serves 1.4.2 since ..." however many env changes came after."""
    recorded = load(state_dir, GOOD, [])
    at = now()
    latest = recorded[0] if recorded and isinstance(recorded[0], dict) else {}
    since = at
    if latest.get("version") == record["version"]:
        since = latest.get("since") or latest.get("at") or at
    good = [g for g in recorded if g.get("config") != record["config"]]
    save(state_dir, GOOD, [dict(record, at=at, since=since), *good][:GOOD_KEPT])


def task_done(state_dir: str, config: str, when: str, count: int) -> None:
    """`count` tasks of the list `when` succeeded for this configuration (kept for the last 20)."""
    done = load(state_dir, TASKS, {})
    entry = done.pop(config, {})
    entry[when] = max(count, entry.get(when, 0))
    done[config] = entry
    save(state_dir, TASKS, dict(list(done.items())[-20:]))


def quarantine(state_dir: str, key: str, version: str, reason: str) -> None:
    entries = load(state_dir, QUARANTINE, {})
    entries[key] = {"version": version, "reason": reason, "at": now()}
    save(state_dir, QUARANTINE, entries)


def unquarantine(state_dir: str, key: str, version: str) -> None:
    """Clear the entry for this configuration, and a whole-version entry of older hosts."""
    entries = load(state_dir, QUARANTINE, {})
    entries.pop(key, None)
    if version in entries and "version" not in entries[version]:
        del entries[version]
    save(state_dir, QUARANTINE, entries)


def gate_of(state_dir: str, unit: str) -> tuple[Json | None, Json]:
    """(the gate record of the process running now, or None; the unit's facts right now)."""
    from .systemd import unit_state

    state = unit_state(unit)
    record = load(state_dir, GATES, {}).get(unit)
    if not isinstance(record, dict):
        return None, state
    if not gate_holds(state["active"], state["invocation"], record.get("invocation")):
        return None, state
    return record, state


def maintenance(state_dir: str, on: bool, why: str, by: str) -> None:
    path = os.path.join(state_dir, MAINTENANCE)
    if on:
        save(state_dir, MAINTENANCE, {"on": True, "reason": why, "by": by, "at": now()})
    elif os.path.exists(path):
        os.unlink(path)


def hold(state_dir: str, record: Json | None) -> None:
    """Record the hold `reconcile rollback` leaves (stamped now), or end it (None)."""
    path = os.path.join(state_dir, HOLD)
    if record is not None:
        save(state_dir, HOLD, dict(record, at=now()))
    elif os.path.exists(path):
        os.unlink(path)
