"""Caddy: a Caddyfile validated before it replaces the live one, and reloads with a timeout."""

from __future__ import annotations

import contextlib
import json
import os

from . import records
from .context import Context
from .fsops import atomic_write, decode, fsync_dir, makedirs, now, read_file, read_json, run
from .protocol import AgentError, Json
from .systemd import systemctl, unit_state


def caddy_validate(path: str) -> None:
    proc = run(["caddy", "validate", "--config", path, "--adapter", "caddyfile"], timeout=60)
    if proc.returncode != 0:
        lines = [ln for ln in decode(proc.stderr + b"\n" + proc.stdout).splitlines() if "error" in ln.lower()]
        raise AgentError(
            "caddy refused the rendered Caddyfile; the live one was not touched",
            "\n".join(lines[-5:]),
            code="caddy",
        )


def do_write_caddyfile(ctx: Context, a: Json) -> Json:
    """Caddy is never pointed at a process that has not passed its health gate: the backends
    the new file routes to are checked against the gate records here, on the host, at the
    moment of the switch."""
    path = a["path"]
    for unit in a["routes_to"]:
        if records.gate_of(ctx.state_dir, unit)[0] is None:
            raise AgentError(
                f"refusing to route Caddy to {unit}: the process it runs has not passed a health gate",
                code="ungated",
            )
    have = read_file(path)
    if have and have.get("content") == a["content"]:
        return {"skipped": "already as wanted"}
    folder = os.path.dirname(path)
    makedirs(folder)
    candidate = os.path.join(folder, f".{os.path.basename(path)}.candidate-{os.getpid()}")
    atomic_write(candidate, a["content"].encode(), 0o644)
    try:
        caddy_validate(candidate)
        old = read_file(path)
        ctx.caddy_backup = (
            old["content"].encode("utf-8", "surrogateescape") if old and "content" in old else None
        )
        os.replace(candidate, path)
        fsync_dir(folder)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(candidate)
    return {}


def caddy_reload(path: str) -> None:
    """What the Caddy unit's ExecReload runs, but with our own timeout.

    Not `systemctl reload caddy`: Caddy before 2.10 tells systemd RELOADING=1 and, when the new
    config is refused, never READY=1 again (caddyserver/caddy#7385), so systemctl waits forever
    and the unit stays "reloading". Loading a good config afterwards sends READY=1.
    """
    proc = run(["caddy", "reload", "--config", path, "--adapter", "caddyfile", "--force"], timeout=60)
    if proc.returncode != 0:
        said = decode(proc.stderr + b"\n" + proc.stdout)
        lines = [ln for ln in said.splitlines() if "error" in ln.lower()] or said.splitlines()
        raise AgentError("Caddy refused to load the new Caddyfile", "\n".join(lines[-3:]), code="caddy")


def _loaded(ctx: Context, path: str, unit: str) -> bool:
    data = read_file(path)
    loaded = read_json(os.path.join(ctx.state_dir, "caddy-loaded.json"))
    return (
        bool(data and loaded and isinstance(loaded, dict) and loaded.get("sha256") == data.get("sha256"))
        and unit_state(unit)["active"] == "active"
    )


def do_load_caddy(ctx: Context, a: Json) -> Json:
    """Start Caddy, or gracefully reload it; when Caddy refuses a reload it keeps serving the
    old config, so the old file is put back (and loaded again) to keep disk and memory equal."""
    path = a["path"]
    if a["unless_loaded"] and _loaded(ctx, path, a["unit"]):
        return {"skipped": "Caddy serves this Caddyfile already"}
    if a.get("verb") == "start":
        systemctl("start", a["unit"])
    else:
        try:
            caddy_reload(path)
        except AgentError as exc:
            if ctx.caddy_backup is not None:
                atomic_write(path, ctx.caddy_backup, 0o644)
                with contextlib.suppress(AgentError):
                    caddy_reload(path)
                exc.message += "; the previous Caddyfile is back in place and still serving"
            raise
    data = read_file(path)
    if data and "sha256" in data:
        state = {"sha256": data["sha256"], "at": now()}
        atomic_write(os.path.join(ctx.state_dir, "caddy-loaded.json"), json.dumps(state).encode(), 0o644)
    return {}
