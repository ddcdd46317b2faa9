"""Caddy: an app's fragment (or the main Caddyfile) written, the whole configuration validated
from the main Caddyfile, and reloads with a timeout. All under the host-wide lock, since the
configuration is every app's: a file that makes it invalid is put back at once, and a reload
Caddy refuses puts back every file this apply wrote, so every app keeps serving as before."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os

from . import records
from .context import Context
from .files import keep_backup
from .fsops import atomic_write, decode, fsync_dir, now, read_file, read_json, run
from .lock import hold_host_lock
from .protocol import AgentError, Json
from .systemd import systemctl, unit_state


def caddy_validate(main: str) -> None:
    proc = run(["caddy", "validate", "--config", main, "--adapter", "caddyfile"], timeout=60)
    if proc.returncode != 0:
        lines = [ln for ln in decode(proc.stderr + b"\n" + proc.stdout).splitlines() if "error" in ln.lower()]
        raise AgentError(
            "caddy refused the configuration; the live one was not touched",
            "\n".join(lines[-5:]),
            code="caddy",
        )


def _bytes(path: str) -> bytes | None:
    have = read_file(path)
    if have and have.get("kind") == "file":
        return str(have["content"]).encode("utf-8", "surrogateescape")
    return None


def _put(path: str, data: bytes | None) -> None:
    if data is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            fsync_dir(os.path.dirname(path))
    else:
        atomic_write(path, data, 0o644)


def do_write_caddyfile(ctx: Context, a: Json) -> Json:
    """Caddy is never pointed at a process that has not passed its health gate: the backends
    the new file routes to are checked against the gate records here, on the host, at the
    moment of the switch."""
    path, main = a["path"], a["main"]
    for unit in a["routes_to"]:
        if records.gate_of(ctx.state_dir, unit)[0] is None:
            raise AgentError(
                f"refusing to route Caddy to {unit}: the process it runs has not passed a health gate",
                code="ungated",
            )
    want = None if a.get("content") is None else a["content"].encode("utf-8", "surrogateescape")
    hold_host_lock(ctx)
    have = _bytes(path)
    if have == want:
        return {"skipped": "already as wanted"}
    if a["backup"]:
        keep_backup(ctx, path)
    ctx.caddy_backups.setdefault(path, have)
    _put(path, want)
    try:
        caddy_validate(main)
    except AgentError:
        _put(path, have)
        raise
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
        raise AgentError("Caddy refused to load the new configuration", "\n".join(lines[-3:]), code="caddy")


def _fragment_sha(path: str) -> str | None:
    data = _bytes(path)
    return None if data is None else hashlib.sha256(data).hexdigest()


def _loaded(ctx: Context, fragment: str, unit: str) -> bool:
    loaded = read_json(os.path.join(ctx.state_dir, "caddy-loaded.json"))
    sha = _fragment_sha(fragment)
    return isinstance(loaded, dict) and loaded.get("sha256") == sha and unit_state(unit)["active"] == "active"


def _routes(fragment: str) -> str | None:
    """The colour the fragment routes to (its marker line), as Caddy now serves it."""
    data = _bytes(fragment)
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        if line.startswith("# routes to colour: "):
            return line.split(":", 1)[1].strip()
    return None


def do_load_caddy(ctx: Context, a: Json) -> Json:
    """Start Caddy, or gracefully reload it; when Caddy refuses a reload it keeps serving the
    old config, so the old files are put back (and loaded again) to keep disk and memory equal."""
    main, fragment = a["path"], a["fragment"]
    if a["unless_loaded"] and _loaded(ctx, fragment, a["unit"]):
        return {"skipped": "Caddy serves this configuration already"}
    hold_host_lock(ctx)
    if a.get("verb") == "start":
        systemctl("start", a["unit"])
    else:
        try:
            caddy_reload(main)
        except AgentError as exc:
            if ctx.caddy_backups:
                for path, data in ctx.caddy_backups.items():
                    _put(path, data)
                with contextlib.suppress(AgentError):
                    caddy_reload(main)
                exc.message += "; the previous configuration is back in place and still serving"
            raise
    state = {"sha256": _fragment_sha(fragment), "routes": _routes(fragment), "at": now()}
    atomic_write(os.path.join(ctx.state_dir, "caddy-loaded.json"), json.dumps(state).encode(), 0o644)
    return {}
