"""Observation: one read-only snapshot of everything the planner needs, and its fingerprint."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
from typing import Any

from . import caddyconfig
from .fsops import account, read_file, read_link
from .lock import lock_state
from .protocol import PROTOCOL, Json
from .records import GATES, GOOD, HOLD, MAINTENANCE, PAUSE, QUARANTINE, TASKS, StateFileError, load
from .runtime import list_images, resolve
from .systemd import systemctl_show


def releases(releases_dir: str, state_dir: str, errors: list[str]) -> Json:
    try:
        names = sorted(n for n in os.listdir(releases_dir) if not n.startswith("."))
    except FileNotFoundError:
        return {}
    out: Json = {}
    for name in names:
        full = os.path.join(releases_dir, name)
        if os.path.isdir(full) and not os.path.islink(full):
            try:
                meta = load(state_dir, os.path.join("releases", f"{name}.json"), {})
            except StateFileError as exc:
                meta = {}
                errors.append(str(exc))
            out[name] = {"meta": meta}
    return out


def snapshots(state_dir: str) -> list[str]:
    try:
        names = os.listdir(os.path.join(state_dir, "snapshots"))
    except FileNotFoundError:
        return []
    return sorted(n[: -len(".sqlite")] for n in names if n.endswith(".sqlite") and not n.startswith("."))


def frontends(folder: str | None) -> Json:
    """Static frontends copied out of images: name -> when it arrived."""
    if not folder:
        return {}
    try:
        names = [n for n in os.listdir(folder) if not n.startswith(".")]
    except FileNotFoundError:
        return {}
    out: Json = {}
    for name in sorted(names):
        with contextlib.suppress(OSError):
            out[name] = os.stat(os.path.join(folder, name)).st_mtime
    return out


def globbed(patterns: list[str]) -> Json:
    """The text of every regular file matching the patterns: other apps' Caddy fragments."""
    import glob

    out: Json = {}
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            found = read_file(path)
            if found and found.get("kind") == "file":
                out[path] = found["content"]
    return out


def user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def observe(spec: Json) -> Json:
    """One snapshot of everything the planner needs. Reads only; never writes."""
    state_dir = spec["state"]
    state = records(state_dir)
    runtime, runtime_error = resolve(spec.get("images"))
    units = systemctl_show(list(spec.get("units", [])))
    snap: Json = {
        "protocol": PROTOCOL,
        "host": {
            "hostname": os.uname().nodename,  # what socket.gethostname() returns
            "python": "%d.%d.%d" % sys.version_info[:3],
            "uid": os.getuid(),
            "user": user_name(os.getuid()),
        },
        "files": {p: read_file(p) for p in spec.get("files", [])},
        "globbed": globbed(spec.get("globs", [])),
        "links": {p: read_link(p) for p in spec.get("links", [])},
        "releases": releases(spec["releases"], state_dir, state["errors"]),
        "units": units,
        "caddy": caddy(spec, units),
        "which": {name: shutil.which(name) for name in spec.get("commands", [])},
        "state": state,
        "lock": lock_state(state_dir),
        "runtime": runtime,
        "runtime_error": runtime_error,
        "images": list_images(runtime),
        "frontends": frontends(spec.get("frontends")),
        "users": {name: account(name) for name in spec.get("users", [])},
    }
    snap["fingerprint"] = fingerprint(snap)
    return snap


def caddy(spec: Json, units: Json) -> Json:
    """What Caddy runs, asked of its admin API (the main Caddyfile names the address)."""
    main = spec.get("caddy_main")
    if not main:
        return {}
    have = read_file(main)
    text = str(have["content"]) if have and have.get("kind") == "file" else None
    active = (units.get("caddy.service") or {}).get("active") in ("active", "reloading")
    return caddyconfig.loaded(text, active)


def records(state_dir: str) -> Json:
    """The reconciler's own records; an unreadable one is named in `errors`, not guessed at."""
    out: Json = {
        "snapshots": snapshots(state_dir),
        "errors": [],
    }
    named: list[tuple[str, str, Any]] = [
        ("gates", GATES, {}),
        ("good", GOOD, []),
        ("quarantine", QUARANTINE, {}),
        ("tasks", TASKS, {}),
        ("maintenance", MAINTENANCE, {}),
        ("paused", PAUSE, {}),
        ("held", HOLD, {}),
    ]
    for key, name, empty in named:
        try:
            out[key] = load(state_dir, name, empty)
        except StateFileError as exc:
            out[key] = empty
            out["errors"].append(str(exc))
    return out


# What a unit's process is doing changes on its own (a crash loop changes it every second);
# a plan made against files, links and records that have not changed is still sound, and the
# actions that touch processes check them again when they run.
_LIVE = ("active", "sub", "main_pid", "invocation", "restarts", "cwd", "environ")


def fingerprint(snap: Json) -> str:
    """Identity of an observation, ignoring the lock (our own apply holds it when checking)
    and what processes are doing at the moment."""
    relevant = {k: v for k, v in snap.items() if k not in ("lock", "host", "fingerprint", "units")}
    relevant["units"] = {
        name: {k: v for k, v in info.items() if k not in _LIVE}
        for name, info in snap.get("units", {}).items()
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()
