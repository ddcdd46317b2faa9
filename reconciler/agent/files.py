"""Plain actions: files, links, daemon-reload, systemctl verbs, quarantine records."""

from __future__ import annotations

import contextlib
import json
import os

from .context import Context
from .fsops import atomic_symlink, atomic_write, fsync_dir, now, read_json, run
from .protocol import Json
from .systemd import systemctl


def do_write_file(ctx: Context, a: Json) -> Json:
    atomic_write(
        a["path"],
        a["content"].encode("utf-8", "surrogateescape"),
        int(a["mode"]),
        a.get("owner"),
        a.get("group"),
    )
    return {}


def do_remove_file(ctx: Context, a: Json) -> Json:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(a["path"])
        fsync_dir(os.path.dirname(a["path"]))
    return {}


def do_set_symlink(ctx: Context, a: Json) -> Json:
    atomic_symlink(a["path"], a["target"])
    return {}


def do_daemon_reload(ctx: Context, a: Json) -> Json:
    systemctl("daemon-reload")
    return {}


def do_systemctl(ctx: Context, a: Json) -> Json:
    if a["verb"] in ("start", "restart"):
        # A deliberate start is not a crash loop: clear systemd's start-rate counter so a
        # quick deploy-rollback-deploy sequence is not refused ("start request repeated
        # too quickly"). Automatic restarts by systemd stay rate-limited.
        run(["systemctl", "reset-failed", "--", a["unit"]], timeout=30)
    systemctl(a["verb"], a["unit"])
    return {}


def do_record_quarantine(ctx: Context, a: Json) -> Json:
    path = os.path.join(ctx.state_dir, "quarantine.json")
    current = read_json(path) or {}
    if not isinstance(current, dict) or current.get("unreadable"):
        current = {}
    if a.get("clear"):
        current.pop(a["version"], None)
    else:
        current[a["version"]] = {"at": now(), "reason": a.get("why", "")}
    atomic_write(path, json.dumps(current, sort_keys=True).encode(), 0o644)
    return {}
