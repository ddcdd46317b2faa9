"""Caddy: an app's fragment (or the main Caddyfile) written, the whole configuration validated
from the main Caddyfile, and loads with a timeout. All under the host-wide lock, since the
configuration is every app's: a file that makes it invalid is put back at once, and a reload
Caddy refuses puts back every file this apply wrote, so every app keeps serving as before.

Caddy is never pointed at a process of the app that has not passed its health gate, whatever
the plan says: before a write is kept and before any load, the whole configuration is adapted
as Caddy would load it, its real upstreams are mapped to the app's units by their ports, and
each one's gate record is checked here, on the host, at that moment. Whether to start or to
reload Caddy is decided when the step runs, and afterwards Caddy itself is asked whether it
runs the fragment as written (agent/caddyconfig.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import time

from . import caddyconfig, records
from .context import Context
from .files import keep_backup
from .fsops import atomic_write, decode, fsync_dir, read_file, run
from .lock import hold_host_lock
from .protocol import AgentError, Json
from .systemd import systemctl, unit_state


def adapt(main: str, validate: bool = False) -> Json:
    """The whole configuration as Caddy would load it (JSON), validated if asked."""
    argv = ["caddy", "adapt", "--config", main, "--adapter", "caddyfile"]
    proc = run([*argv, "--validate"] if validate else argv, timeout=60)
    if proc.returncode != 0:
        lines = [ln for ln in decode(proc.stderr + b"\n" + proc.stdout).splitlines() if "error" in ln.lower()]
        raise AgentError(
            "caddy refused the configuration; the live one was not touched",
            "\n".join(lines[-5:]),
            code="caddy",
        )
    try:
        config = json.loads(decode(proc.stdout) or "null")
    except ValueError:
        raise AgentError("caddy adapt printed something that is not JSON", code="caddy") from None
    return config if isinstance(config, dict) else {}


def check_routes(ctx: Context, config: Json, ports: Json, what: str) -> None:
    """Refuse when the configuration sends traffic to one of the app's units whose running
    process has no gate record."""
    for port in caddyconfig.upstream_ports(config):
        unit = ports.get(str(port))
        if unit and records.gate_of(ctx.state_dir, unit)[0] is None:
            raise AgentError(
                f"refusing to {what}: it routes to {unit} (port {port}), whose running process has "
                "not passed a health gate",
                code="ungated",
            )


def _bytes(path: str) -> bytes | None:
    have = read_file(path)
    if have and have.get("kind") == "file":
        return str(have["content"]).encode("utf-8", "surrogateescape")
    return None


def _text(path: str) -> str | None:
    data = _bytes(path)
    return None if data is None else data.decode("utf-8", "surrogateescape")


def _put(path: str, data: bytes | None) -> None:
    if data is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            fsync_dir(os.path.dirname(path))
    else:
        atomic_write(path, data, 0o644)


def do_write_caddyfile(ctx: Context, a: Json) -> Json:
    path, main = a["path"], a["main"]
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
        check_routes(ctx, adapt(main, validate=True), a["ports"], f"write {path}")
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


def _active(unit: str) -> bool:
    return unit_state(unit)["active"] in ("active", "reloading")


def _runs(main: str, unit: str, app: str, fragment: str, ports: Json) -> bool:
    """Caddy, asked, runs the app's fragment as it is on disk."""
    seen = caddyconfig.loaded(_text(main), _active(unit))
    return caddyconfig.runs(seen, app, _text(fragment), ports)


def do_load_caddy(ctx: Context, a: Json) -> Json:
    """Start Caddy if it is down now, else reload it gracefully; when Caddy refuses a reload it
    keeps serving the old config, so the old files are put back (and loaded again) to keep
    disk and memory equal. Then ask Caddy whether it runs what was written."""
    main, unit, app, fragment = a["path"], a["unit"], a["app"], a["fragment"]
    if a["unless_loaded"] and _runs(main, unit, app, fragment, a["ports"]):
        return {"skipped": "Caddy runs this configuration already"}
    hold_host_lock(ctx)
    check_routes(ctx, adapt(main), a["ports"], "load the Caddy configuration")
    started = not _active(unit)
    if started:
        systemctl("start", unit)
    else:
        _reload_or_put_back(ctx, main, a["ports"])
    for attempt in range(20):
        if _runs(main, unit, app, fragment, a["ports"]):
            return {"started": True} if started else {}
        if attempt == 0 and started:
            # Started by someone else meanwhile, with what was on disk then: load ours.
            _reload_or_put_back(ctx, main, a["ports"])
        time.sleep(0.1)
    raise AgentError(
        "Caddy does not run the configuration that was written",
        f"its admin API reports no mark of {fragment} as it is on disk",
        code="caddy",
    )


def _reload_or_put_back(ctx: Context, main: str, ports: Json) -> None:
    """A reload Caddy refuses leaves it serving what it had: the files this apply wrote are
    put back and loaded again (which also ends the "reloading" state Caddy before 2.10 leaves
    its unit in), unless they route to a process without a gate record (someone else's edit,
    or a crash since): then Caddy is left serving what it had, which is the same."""
    try:
        caddy_reload(main)
    except AgentError as exc:
        if ctx.caddy_backups:
            for path, data in ctx.caddy_backups.items():
                _put(path, data)
            with contextlib.suppress(AgentError):
                check_routes(ctx, adapt(main), ports, "load the previous configuration again")
                caddy_reload(main)
            exc.message += "; the previous configuration is back in place and still serving"
        raise
