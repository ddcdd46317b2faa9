"""plan(desired, observed) -> Plan. Pure: no I/O, no clock, no randomness.

Each rule compares one desired fact with one observed fact and emits an action only when they
differ, with the observed fact as the reason. The actions are then ordered by phase.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable

from reconciler.observe.snapshot import CADDY_UNIT, Observed, UnitState, unit_path
from reconciler.plan.actions import (
    Action,
    CheckHealth,
    DaemonReload,
    LoadCaddy,
    LoadImage,
    Phase,
    Plan,
    PruneRelease,
    RecordQuarantine,
    RemoveFile,
    RestoreDatabase,
    SetSymlink,
    SnapshotDatabase,
    Systemctl,
    UploadRelease,
    WriteCaddyfile,
    WriteFile,
)
from reconciler.render import caddyfile, envfile, units
from reconciler.spec.model import DesiredState

COLOURS = ("blue", "green")


def plan(desired: DesiredState, observed: Observed, *, retry_quarantined: bool = False) -> Plan:
    version = desired.release.version
    if version in observed.quarantine and not retry_quarantined:
        return Plan((), observed.fingerprint, quarantined=observed.quarantine[version] or "failed before")
    blockers = tuple(_blockers(desired, observed))
    if blockers:
        return Plan((), observed.fingerprint, blockers=blockers)
    if desired.strategy == "blue-green":
        from reconciler.plan import bluegreen

        actions = bluegreen.actions(desired, observed)
    else:
        actions = _single_slot_actions(desired, observed)
    if retry_quarantined and version in observed.quarantine:
        actions.append(RecordQuarantine(f"retrying {version} on purpose", version=version, clear=True))
    actions += prune(desired, observed, actions)
    ordered = sorted(_merge_daemon_reloads(actions), key=lambda a: a.phase)
    return Plan(tuple(ordered), observed.fingerprint)


def _blockers(desired: DesiredState, observed: Observed) -> Iterable[str]:
    if not observed.commands.get("systemctl"):
        yield "systemctl was not found on the host: the reconciler manages systemd services"
    if not observed.commands.get("caddy"):
        yield "caddy is not installed on the host: install it (e.g. `apt-get install caddy`) and run again"
    for path in (desired.layout.current, desired.layout.previous):
        link = observed.link(path)
        if link is not None and link.kind != "symlink":
            yield f"{path} is a real {link.kind}, not a symlink; move it away and run again"
    user = desired.backend.user  # the reconciler does not create accounts: they must exist
    if user is not None and user in observed.users:
        account = observed.users[user]
        if account is None:
            yield (
                f"backend.user {user!r} does not exist on the host: create it as a system user "
                f"(`useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {user}`) "
                "and run again, or remove backend.user to run the services as root"
            )
        elif not account.has_group:
            yield (
                f"backend.user {user!r} has no group of that name on the host, and "
                f"{desired.layout.env_file} is given to that group: create it "
                f"(`groupadd --system {user} && usermod -a -G {user} {user}`) and run again"
            )
    have = observed.releases.get(desired.release.version)
    want_sha = desired.release.sha256
    if have is not None and want_sha and have.sha256 and have.sha256 != want_sha:
        yield (
            f"release {desired.release.version} on the host came from an artifact with sha256 "
            f"{have.sha256}, but release.sha256 is {want_sha}: a version's content must not change, "
            "so bump the version (or delete the release on the host on purpose)"
        )


def _merge_daemon_reloads(actions: list[Action]) -> list[Action]:
    """One daemon-reload per phase, carrying every reason."""
    out: list[Action] = []
    seen: dict[Phase, int] = {}
    for action in actions:
        if isinstance(action, DaemonReload):
            if action.phase in seen:
                i = seen[action.phase]
                out[i] = DaemonReload(f"{out[i].reason}; {action.reason}", phase=action.phase)
                continue
            seen[action.phase] = len(out)
        out.append(action)
    return out


# --- restart and symlink-swap: one release slot behind `current` ---------------------------


def release_dir(desired: DesiredState, version: str) -> str:
    return desired.layout.release_dir(version)


def link_points_to(observed: Observed, link_path: str) -> str | None:
    """The absolute, normalised path a symlink names, or None."""
    link = observed.link(link_path)
    if link is None or link.kind != "symlink" or link.target is None:
        return None
    return posixpath.normpath(posixpath.join(posixpath.dirname(link_path), link.target))


def _single_slot_actions(desired: DesiredState, observed: Observed) -> list[Action]:
    actions: list[Action] = []
    actions += upload_if_missing(desired, observed, desired.release.version)
    wanted_units = desired_units(desired)
    for name, text in wanted_units.items():
        actions += unit_file_actions(desired, observed, name, text)
    actions += env_file_actions(desired, observed)
    actions += _switch_current(desired, observed)
    want_dir = release_dir(desired, desired.release.version)
    for name, text in wanted_units.items():
        is_backend = name == desired.backend_unit
        actions += run_actions(
            observed.unit(name),
            text,
            want_release=want_release_dir(desired, want_dir) if is_backend else want_dir,
            want_env_hash=env_hash(desired) if is_backend else None,
            env_reason=env_reason(desired, observed) if is_backend else "",
            health=backend_health(desired, desired.backend.port, name)
            if is_backend
            else frontend_health(desired),
            file_text=observed.content(unit_path(desired, name)),
        )
    actions += data_actions(desired, observed, [desired.backend_unit])
    actions += caddy_actions(desired, observed, render_caddyfile(desired, desired.backend.port))
    actions += retire_frontend(desired, observed)
    for colour in ("blue", "green"):
        why = "the strategy is not blue-green"
        actions += retire_unit(desired, observed, desired.colour_unit(colour), why)
    return actions


def upload_if_missing(desired: DesiredState, observed: Observed, version: str) -> list[Action]:
    rel = desired.release
    have = observed.releases.get(version)
    if rel.image is not None:
        if have is not None and rel.image in observed.images:
            return []
        why = (
            f"release {version} is not on the host"
            if have is None
            else f"image {rel.image} is not on the host"
        )
        return [
            LoadImage(
                why,
                version=version,
                image=rel.image,
                releases=desired.layout.releases,
                state=desired.layout.state,
                source=rel.source,
                sha256=rel.sha256,
                digest=rel.digest,
                image_root=rel.image_root,
                static_dir=desired.frontend.static_dir if desired.frontend.mode == "static" else None,
            )
        ]
    if have is None and rel.source is not None:
        return [
            UploadRelease(
                f"release {version} is not on the host",
                version=version,
                releases=desired.layout.releases,
                source=rel.source,
                sha256=rel.sha256,
            )
        ]
    return []


def desired_units(desired: DesiredState) -> dict[str, str]:
    """Unit name -> file content, for the units this desired state runs."""
    out = {
        desired.backend_unit: units.render_service(
            backend_spec(desired, desired.layout.current, desired.backend.port)
        )
    }
    if desired.frontend.mode == "dev-server":
        out[desired.frontend_unit] = units.render_service(
            units.ServiceSpec(
                app=desired.app,
                role="frontend",
                argv=desired.frontend.dev_command,
                workdir=desired.layout.current,
                user=desired.backend.user,
            )
        )
    return out


def backend_spec(desired: DesiredState, workdir: str, port: int, role: str = "backend") -> units.ServiceSpec:
    rel = desired.release
    return units.ServiceSpec(
        app=desired.app,
        role=role,
        argv=desired.backend.command,
        workdir=rel.image_root if rel.image else workdir,
        env_file=desired.layout.env_file,
        user=desired.backend.user,
        state_directory=desired.app,
        port=port,
        image=rel.image,
        release=rel.version,
    )


def want_release_dir(desired: DesiredState, release: str) -> str | None:
    """What a backend's working directory must be; an image release is judged by its unit."""
    return None if desired.release.image else release


def unit_file_actions(desired: DesiredState, observed: Observed, name: str, text: str) -> list[Action]:
    path = unit_path(desired, name)
    have = observed.content(path)
    unit = observed.unit(name)
    if have == text:
        if unit.need_daemon_reload:
            return [DaemonReload(f"systemd has not loaded the current {name} from disk")]
        return []
    if have is None:
        return [
            WriteFile(f"{name} does not exist", path=path, content=text),
            DaemonReload(f"{name} was written"),
        ]
    change = units.classify(have, text)
    out: list[Action] = [
        WriteFile(f"{name} differs ({change.describe()})", path=path, content=text),
        DaemonReload(f"{name} was written"),
    ]
    if change.reenable and unit.is_enabled:
        # The enablement links were made from the old [Install] section; redo them.
        why = f"{name}'s [Install] section changed"
        out.append(Systemctl(why, verb="reenable", unit=name, phase=Phase.START))
    return out


def env_hash(desired: DesiredState) -> str:
    return envfile.hash_of(envfile.render(desired.app, desired.env)) or ""


def env_names(desired: DesiredState, names: list[str]) -> str:
    """Changed variable names, secrets marked as such; values are never part of a reason."""
    secret = {v.name for v in desired.env if v.secret}
    return ", ".join(f"{n} (secret)" if n in secret else n for n in names)


def env_reason(desired: DesiredState, observed: Observed) -> str:
    names = envfile.changed_names(observed.content(desired.layout.env_file), desired.env)
    if names:
        return "environment changed: " + env_names(desired, names)
    return "the running process was started with an older environment file"


def env_file_actions(desired: DesiredState, observed: Observed) -> list[Action]:
    text = envfile.render(desired.app, desired.env)
    have = observed.file(desired.layout.env_file)
    if have is not None and have.content == text and have.mode == 0o640:
        return []
    if have is None:
        reason = "environment file does not exist"
    elif have.content != text:
        names = envfile.changed_names(have.content, desired.env)
        reason = "environment differs: " + (env_names(desired, names) if names else "formatting")
    else:
        reason = f"environment file has mode {oct(have.mode or 0)}, expected 0o640"
    return [
        WriteFile(
            reason,
            path=desired.layout.env_file,
            content=text,
            mode=0o640,
            group=desired.backend.user,
            secret=True,
        )
    ]


def _switch_current(desired: DesiredState, observed: Observed) -> list[Action]:
    layout = desired.layout
    want = release_dir(desired, desired.release.version)
    now = link_points_to(observed, layout.current)
    if now == want:
        return []
    out: list[Action] = []
    if desired.strategy == "symlink-swap" and now is not None and now != want:
        prev_release = posixpath.basename(now)
        if prev_release in observed.releases and link_points_to(observed, layout.previous) != now:
            out.append(
                SetSymlink(
                    f"keep {prev_release} for instant rollback",
                    path=layout.previous,
                    target_path=posixpath.relpath(now, layout.root),
                )
            )
    was = f"points to {posixpath.basename(now)}" if now else "does not exist"
    out.append(
        SetSymlink(
            f"current {was}; desired {desired.release.version}",
            path=layout.current,
            target_path=posixpath.relpath(want, layout.root),
        )
    )
    return out


def backend_health(desired: DesiredState, port: int, unit: str, version: str | None = None) -> CheckHealth:
    """Health gate for a backend; `version` defaults to the desired one."""
    h = desired.health
    version = version or desired.release.version
    return CheckHealth(
        f"{unit} was (re)started",
        url=f"http://127.0.0.1:{port}{desired.backend.health}",
        unit=unit,
        timeout=h.timeout,
        interval=h.interval,
        passes=h.passes,
        stable=h.stable,
        expect_version=version if h.expect_version else None,
        gates=version,
    )


def frontend_health(desired: DesiredState) -> CheckHealth:
    h = desired.health
    return CheckHealth(
        f"{desired.frontend_unit} was (re)started",
        url=f"http://127.0.0.1:{desired.frontend.dev_port}/",
        unit=desired.frontend_unit,
        timeout=h.timeout,
        interval=h.interval,
        passes=1,
        any_status=True,
    )


def run_actions(
    unit: UnitState,
    text: str,
    *,
    want_release: str | None,
    want_env_hash: str | None,
    env_reason: str,
    health: CheckHealth,
    file_text: str | None,
) -> list[Action]:
    """enable / start / restart a unit so its process runs the desired definition and release."""
    out: list[Action] = []
    name = unit.name
    if not unit.is_enabled:
        out.append(
            Systemctl(
                f"{name} is {unit.enabled or 'not enabled'}", verb="enable", unit=name, phase=Phase.START
            )
        )
    if not unit.is_active:
        state = unit.active if unit.exists else "not loaded"
        if unit.sub and unit.sub not in ("dead", unit.active):
            state += f" ({unit.sub})"
        out += [Systemctl(f"{name} is {state}", verb="start", unit=name, phase=Phase.START), health]
        return out
    stale = stale_reasons(unit, text, want_release, want_env_hash, env_reason, file_text)
    if stale:
        out += [Systemctl("; ".join(stale), verb="restart", unit=name, phase=Phase.RESTART), health]
    return out


def stale_reasons(
    unit: UnitState,
    text: str,
    want_release: str | None,
    want_env_hash: str | None,
    env_reason: str,
    file_text: str | None,
) -> list[str]:
    """Why the running process does not run what is desired (empty: it does).

    Judged from the process itself (its working directory and the hashes it inherited), so a
    unit written just before an interrupted run is still restarted by the next one.
    """
    reasons = []
    if want_release is not None and unit.cwd is not None and unit.cwd != want_release:
        reasons.append(
            f"runs release {posixpath.basename(unit.cwd)}, desired {posixpath.basename(want_release)}"
        )
    if unit.environ.get(units.HASH_VAR) != units.marker_of(text):
        if file_text is not None and file_text != text:
            reasons.append(f"unit changed ({units.classify(file_text, text).describe()})")
        else:
            reasons.append("the running process was started from an older unit definition")
    if want_env_hash is not None and unit.environ.get(envfile.HASH_VAR) != want_env_hash:
        reasons.append(env_reason)
    return reasons


# --- Caddy -------------------------------------------------------------------------------


def default_static_root(desired: DesiredState) -> str:
    """The release's own folder, not `current`: the frontend then switches in the same graceful
    Caddy reload that follows the backend's health gate, never ahead of the backend."""
    return f"{release_dir(desired, desired.release.version)}/{desired.frontend.static_dir}"


def render_caddyfile(
    desired: DesiredState, backend_port: int, static_root: str | None = None, colour: str | None = None
) -> str:
    static = desired.frontend.mode == "static"
    return caddyfile.render(
        caddyfile.Site(
            app=desired.app,
            address=desired.proxy.site,
            backend_port=backend_port,
            health_path=desired.backend.health,
            static_root=(static_root or default_static_root(desired)) if static else None,
            frontend_port=None if static else desired.frontend.dev_port,
            colour=colour,
        )
    )


def caddy_actions(desired: DesiredState, observed: Observed, text: str) -> list[Action]:
    path = desired.proxy.caddyfile
    caddy = observed.unit(CADDY_UNIT)
    out: list[Action] = []
    have = observed.content(path)
    sha = hashlib.sha256(text.encode()).hexdigest()
    if have != text:
        out.append(WriteCaddyfile(f"{path} {_text_change(have, text)}", path=path, content=text))
        if caddy.is_active:
            out.append(LoadCaddy("the Caddyfile changed", verb="reload", path=path, unit=CADDY_UNIT))
    elif caddy.is_active and observed.caddy_loaded_sha != sha:
        out.append(
            LoadCaddy(
                "Caddy has not loaded the Caddyfile since it was written",
                verb="reload",
                path=path,
                unit=CADDY_UNIT,
            )
        )
    if not caddy.is_active:
        out.append(LoadCaddy(f"{CADDY_UNIT} is {caddy.active}", verb="start", path=path, unit=CADDY_UNIT))
    if not caddy.is_enabled:
        out.append(
            Systemctl(
                f"{CADDY_UNIT} is {caddy.enabled or 'not enabled'}",
                verb="enable",
                unit=CADDY_UNIT,
                phase=Phase.PROXY,
            )
        )
    return out


def _text_change(old: str | None, new: str) -> str:
    """A short account of how a managed file differs: the one changed line, or how many."""
    if old is None:
        return "does not exist"
    a = [ln.strip() for ln in old.splitlines()]
    b = [ln.strip() for ln in new.splitlines()]
    if len(a) == len(b):
        pairs = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
        if len(pairs) == 1:
            return f"differs: {pairs[0][0]!r} -> {pairs[0][1]!r}"
    return "differs from the rendered one (edited by hand, or the desired state changed)"


def retire_frontend(desired: DesiredState, observed: Observed) -> list[Action]:
    """Leaving dev-server mode: stop the dev server only after Caddy stopped routing to it."""
    if desired.frontend.mode == "dev-server":
        return []
    return retire_unit(desired, observed, desired.frontend_unit, "the frontend is served as static files")


def retire_unit(desired: DesiredState, observed: Observed, name: str, why: str) -> list[Action]:
    """Stop, disable and remove a unit this desired state no longer runs (after the proxy switch)."""
    unit = observed.unit(name)
    path = unit_path(desired, name)
    out: list[Action] = []
    if unit.is_active:
        out.append(Systemctl(why, verb="stop", unit=name, phase=Phase.RETIRE))
    if unit.is_enabled:
        out.append(Systemctl(why, verb="disable", unit=name, phase=Phase.RETIRE))
    if observed.file(path) is not None:
        out += [RemoveFile(why, path=path), DaemonReload(f"{name} was removed", phase=Phase.RETIRE)]
    return out


# --- pruning -----------------------------------------------------------------------------


def protected_releases(desired: DesiredState, observed: Observed, actions: list[Action]) -> set[str]:
    """Releases in use once this plan has run: the desired one, whatever a link names after the
    plan's symlink swaps, and what a process keeps running because the plan leaves it alone."""
    links = {
        path: link_points_to(observed, path)
        for path in (
            desired.layout.current,
            desired.layout.previous,
            *(desired.colour_link(c) for c in COLOURS),
        )
    }
    touched_units: set[str] = set()
    for action in actions:
        if isinstance(action, SetSymlink):
            links[action.path] = posixpath.normpath(
                posixpath.join(posixpath.dirname(action.path), action.target_path)
            )
        elif isinstance(action, Systemctl):
            touched_units.add(action.unit)
    keep = {desired.release.version} | {posixpath.basename(t) for t in links.values() if t}
    for name in (desired.backend_unit, desired.frontend_unit, *(desired.colour_unit(c) for c in COLOURS)):
        unit = observed.unit(name)
        running = running_release(unit)
        if unit.is_active and running and name not in touched_units:
            keep.add(running)
    return keep


def running_release(unit: UnitState) -> str | None:
    """The release a unit's process runs: named in its environment (image releases), or the
    folder it runs in."""
    named = unit.environ.get(units.RELEASE_VAR)
    if named:
        return named
    return posixpath.basename(unit.cwd) if unit.cwd else None


def prune(desired: DesiredState, observed: Observed, actions: list[Action]) -> list[Action]:
    """Oldest first, down to release.keep; never a release in use or the one being deployed."""
    present = set(observed.releases) | {
        a.version for a in actions if isinstance(a, UploadRelease | LoadImage)
    }
    excess = len(present) - desired.release.keep
    if excess <= 0:
        return []
    keep = protected_releases(desired, observed, actions)
    candidates = sorted(
        (observed.releases[v] for v in present - keep if v in observed.releases),
        key=lambda r: (r.uploaded, r.version),
    )
    return [
        PruneRelease(
            f"more than release.keep={desired.release.keep} releases on the host; "
            f"{r.version} is the oldest one not in use",
            version=r.version,
            releases=desired.layout.releases,
            state=desired.layout.state,
            image=r.image,
        )
        for r in candidates[:excess]
    ]


def serving_release(desired: DesiredState, observed: Observed) -> str | None:
    """The release that serves traffic on this host, judged from the running processes."""
    if desired.strategy == "blue-green":
        from reconciler.plan import bluegreen

        colour = bluegreen.routed_colour(desired, observed)
        if colour is None or not observed.unit(desired.colour_unit(colour)).is_active:
            return None
        target = link_points_to(observed, desired.colour_link(colour))
        return posixpath.basename(target) if target else None
    unit = observed.unit(desired.backend_unit)
    return running_release(unit) if unit.is_active else None


# --- the database ---------------------------------------------------------------------------


def data_actions(desired: DesiredState, observed: Observed, backend_units: list[str]) -> list[Action]:
    """Snapshot the database when the backend leaves a release; restore the snapshot of the
    release it moves back to, when asked. Judged from the release the backend runs now."""
    data = desired.data
    if data.sqlite is None:
        return []
    version = desired.release.version
    leaving = {
        r for u in backend_units if (r := running_release(observed.unit(u))) and observed.unit(u).is_active
    }
    leaving.discard(version)
    if desired.strategy == "blue-green":
        from reconciler.plan import bluegreen

        served = serving_release(desired, observed)
        leaving = {served} - {version} if served and bluegreen.routed_colour(desired, observed) else set()
    out: list[Action] = []
    folder = f"{desired.layout.state}/snapshots"
    if data.snapshot:
        out += [
            SnapshotDatabase(
                f"the backend leaves release {old}: keep its data as it was",
                database=data.sqlite,
                snapshot=f"{folder}/{old}.sqlite",
            )
            for old in sorted(leaving)
        ]
    if data.restore_on_rollback and leaving and version in observed.snapshots:
        out.append(
            RestoreDatabase(
                f"moving back to {version}: its data as it was when it was left (data.restore_on_rollback)",
                database=data.sqlite,
                snapshot=f"{folder}/{version}.sqlite",
                units=tuple(backend_units),
            )
        )
    return out
