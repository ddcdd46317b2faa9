"""Plain actions: files, links, daemon-reload, systemctl verbs, and the records of quarantine
and of good states. Each does nothing when the host already is as asked, so a rollback plan
made before the failure it undoes can be applied whatever state that failure left."""

from __future__ import annotations

import contextlib
import grp
import os

from . import records
from .context import Context
from .fsops import atomic_symlink, atomic_write, fsync_dir, read_file, read_link, run
from .protocol import AgentError, Json
from .systemd import need_daemon_reload, stop_unit, systemctl, unit_state


def _same_file(path: str, data: bytes, mode: int, group: str | None) -> bool:
    have = read_file(path)
    if not have or have.get("kind") != "file" or have.get("mode") != mode:
        return False
    if have["content"].encode("utf-8", "surrogateescape") != data:
        return False
    if group:
        try:
            return bool(have.get("gid") == grp.getgrnam(group).gr_gid)
        except KeyError:
            return False
    return True


def keep_backup(ctx: Context, path: str) -> None:
    """A dated copy of a file about to be replaced: <state>/adopted/<time><path>, where what
    was adopted from a host set up by hand can be found again."""
    import shutil

    if not os.path.isfile(path) or os.path.islink(path):
        return
    dest = os.path.join(ctx.state_dir, "adopted", ctx.stamp + path)
    os.makedirs(os.path.dirname(dest), mode=0o700, exist_ok=True)
    shutil.copy2(path, dest)


def do_write_file(ctx: Context, a: Json) -> Json:
    data = a["content"].encode("utf-8", "surrogateescape")
    mode = int(a["mode"])
    if _same_file(a["path"], data, mode, a.get("group")):
        return {"skipped": "already as wanted"}
    if a["backup"]:
        keep_backup(ctx, a["path"])
    try:
        atomic_write(a["path"], data, mode, a.get("owner"), a.get("group"))
    except KeyError as exc:  # pwd/grp: no such user or group on this host
        raise AgentError(f"cannot write {a['path']}: {exc.args[0]}", code="host") from None
    return {}


def do_remove_file(ctx: Context, a: Json) -> Json:
    if a["backup"]:
        keep_backup(ctx, a["path"])
    with contextlib.suppress(FileNotFoundError):
        os.unlink(a["path"])
        fsync_dir(os.path.dirname(a["path"]))
    return {}


def do_set_symlink(ctx: Context, a: Json) -> Json:
    have = read_link(a["path"])
    if have and have.get("kind") == "symlink" and have.get("target") == a["target"]:
        return {"skipped": "already as wanted"}
    atomic_symlink(a["path"], a["target"])
    return {}


def do_daemon_reload(ctx: Context, a: Json) -> Json:
    from .lock import hold_host_lock

    if a["unless_clean"] and not need_daemon_reload(list(a["unless_clean"])):
        return {"skipped": "systemd has every unit file loaded"}
    hold_host_lock(ctx)  # systemd is every app's
    systemctl("daemon-reload")
    return {}


def _runs(unit: str, want: Json) -> bool:
    state = unit_state(unit)
    environ = state["environ"]
    return state["active"] in ("active", "reloading") and all(
        environ.get(name) == value for name, value in want.items()
    )


def do_systemctl(ctx: Context, a: Json) -> Json:
    verb, unit = a["verb"], a["unit"]
    if a.get("unless_runs") and _runs(unit, a["unless_runs"]):
        return {"skipped": f"{unit} already runs what is wanted"}
    if verb == "stop":
        stop_unit(unit)
        return {}
    if verb in ("start", "restart"):
        # A deliberate start is not a crash loop: clear systemd's start-rate counter so a
        # quick deploy-rollback-deploy sequence is not refused ("start request repeated
        # too quickly"). Automatic restarts by systemd stay rate-limited.
        run(["systemctl", "reset-failed", "--", unit], timeout=30)
        ctx.started.add(unit)
    systemctl(verb, unit)
    return {}


def do_record_quarantine(ctx: Context, a: Json) -> Json:
    if a["clear"]:
        records.unquarantine(ctx.state_dir, a["key"], a["version"])
    else:
        records.quarantine(ctx.state_dir, a["key"], a["version"], a["why"])
    return {}


def do_record_maintenance(ctx: Context, a: Json) -> Json:
    records.maintenance(ctx.state_dir, bool(a["on"]), a["why"], a["by"])
    return {}


def do_record_hold(ctx: Context, a: Json) -> Json:
    """`reconcile rollback`'s hold on the host (or, `hold` null, its end), under the apply's lock."""
    records.hold(ctx.state_dir, a["hold"])
    return {}


def do_record_good(ctx: Context, a: Json) -> Json:
    """Record the state that now serves as good: every process in it passed its gate with this
    configuration, and its files and links are read back from the host as they are."""
    for unit in a["gates"]:
        record, _ = records.gate_of(ctx.state_dir, unit)
        # A frontend dev server runs no configuration of ours (no environment file): its gate
        # record names none.
        if record is None or record.get("config") not in (None, a["config"]):
            raise AgentError(
                f"not recording a good state: {unit} has not passed its health gate", code="ungated"
            )
    files: Json = {}
    for path in [*a["files"], a["caddyfile"]]:
        have = read_file(path)
        if have and have.get("kind") == "file":
            files[path] = {"content": have["content"], "mode": have["mode"], "gid": have["gid"]}
    links = {}
    for path in a["links"]:
        link = read_link(path)
        if link and link.get("kind") == "symlink":
            links[path] = link["target"]
    good = {k: a[k] for k in ("config", "version", "image", "strategy", "gates", "caddyfile")}
    records.record_good(ctx.state_dir, dict(good, files=files, links=links))
    return {}
