"""Units: their files, whether their process runs what is desired, and their health gates.

Whether a process runs what is desired is judged from the process itself: the unit hash, the
release and the configuration fingerprint it inherited in its environment. Whether it may be
trusted is judged from the host's gate records: a process with no matching record is gated,
whatever happened to the run that started it.
"""

from __future__ import annotations

from reconciler.observe.snapshot import Observed, UnitState, unit_path
from reconciler.plan.actions import Action, CheckHealth, DaemonReload, Phase, RemoveFile, Systemctl, WriteFile
from reconciler.plan.adopt import is_foreign
from reconciler.plan.config import config_change
from reconciler.render import envfile, units
from reconciler.spec.model import DesiredState

NOT_GATED = "no passed health gate is recorded for the process now running"


def backend_spec(
    desired: DesiredState,
    release_dir: str,
    port: int,
    env_file: str,
    role: str = "backend",
    runtime: str = "podman",
    run_as: tuple[int, int] | None = None,
) -> units.ServiceSpec:
    """`runtime` and `run_as` (backend.user's uid and gid) as the host has them, for an image."""
    rel = desired.release
    return units.ServiceSpec(
        app=desired.app,
        role=role,
        argv=desired.backend.command,
        workdir=rel.image_root if rel.image else release_dir,
        env_file=env_file,
        user=desired.backend.user,
        state_directory=desired.app,
        port=port,
        image=rel.image,
        release=rel.version,
        env_names=tuple(sorted(v.name for v in desired.env)),
        stop_timeout=desired.backend.stop_timeout,
        stop_signal=desired.backend.stop_signal,
        shared=tuple((f"{desired.layout.shared}/{p}", f"{rel.image_root}/{p}") for p in desired.shared)
        if rel.image
        else (),
        runtime=runtime,
        run_as=run_as if rel.image else None,
    )


def frontend_text(
    desired: DesiredState,
    release_dir: str,
    runtime: str = "podman",
    run_as: tuple[int, int] | None = None,
) -> str:
    """The dev server's unit: run from the release folder, or as a container of its own image.
    A container of its own image names no release, so a backend bump leaves it running."""
    fe = desired.frontend
    return units.render_service(
        units.ServiceSpec(
            app=desired.app,
            role="frontend",
            argv=fe.dev_command,
            workdir=fe.image_root if fe.image else release_dir,
            user=desired.backend.user,
            release=None if fe.image else desired.release.version,
            image=fe.image,
            runtime=runtime,
            run_as=run_as if fe.image else None,
        )
    )


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
    if is_foreign(have):
        why = f"{name} was written by someone else: adopted, a backup is kept ({change.describe()})"
    else:
        why = f"{name} differs ({change.describe()})"
    out: list[Action] = [
        WriteFile(why, path=path, content=text, backup=is_foreign(have)),
        DaemonReload(f"{name} was written"),
    ]
    if change.reenable and unit.is_enabled:
        # The enablement links were made from the old [Install] section; redo them.
        why = f"{name}'s [Install] section changed"
        out.append(Systemctl(why, verb="reenable", unit=name))
    return out


def backend_gate(desired: DesiredState, unit: str, port: int, version: str) -> CheckHealth:
    h = desired.health
    return CheckHealth(
        f"{unit} was (re)started",
        url=f"http://127.0.0.1:{port}{desired.backend.health}",
        unit=unit,
        timeout=h.timeout,
        interval=h.interval,
        passes=h.passes,
        stable=h.stable,
        expect_version=version if h.expect_version else None,
        version_at={h.version_at[0]: h.version_at[1]} if h.expect_version and h.version_at else None,
    )


def frontend_gate(desired: DesiredState) -> CheckHealth:
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


def describe_state(unit: UnitState) -> str:
    state = unit.active if unit.exists else "not loaded"
    if unit.sub and unit.sub not in ("dead", unit.active):
        state += f" ({unit.sub})"
    if unit.restarts:
        state += f", {unit.restarts} automatic restart{'s' if unit.restarts != 1 else ''}"
    return state


def run_actions(
    desired: DesiredState,
    observed: Observed,
    name: str,
    text: str,
    gate: CheckHealth,
    *,
    config: str | None,
    env_file: str | None,
) -> list[Action]:
    """enable / start / restart a unit so its process runs the desired definition, then gate
    it; a process that already runs it but has no gate record is gated as it is."""
    unit = observed.unit(name)
    out: list[Action] = []
    if not unit.is_enabled:
        why = f"{name} is {unit.enabled or 'not enabled'}"
        out.append(Systemctl(why, verb="enable", unit=name))
    if not unit.is_active:
        out += [
            Systemctl(f"{name} is {describe_state(unit)}", verb="start", unit=name),
            gate,
        ]
        return out
    stale = stale_reasons(desired, observed, unit, text, config, env_file)
    if stale:
        out += [Systemctl("; ".join(stale), verb="restart", unit=name), gate]
    elif not observed.gated(name):
        out.append(with_reason(gate, f"{NOT_GATED} ({name}, started {_since(unit)})"))
    return out


def with_reason(action: CheckHealth, reason: str) -> CheckHealth:
    return action.because(reason)


def _since(unit: UnitState) -> str:
    if unit.restarts:
        return f"by systemd after {unit.restarts} automatic restart{'s' if unit.restarts != 1 else ''}"
    return "by an earlier run that did not gate it, or at boot"


def stale_reasons(
    desired: DesiredState,
    observed: Observed,
    unit: UnitState,
    text: str,
    config: str | None,
    env_file: str | None,
) -> list[str]:
    """Why the running process does not run what is desired (empty: it does)."""
    reasons = []
    running = unit.environ.get(units.RELEASE_VAR)
    if config is not None and unit.environ.get(envfile.CONFIG_VAR) != config:
        reasons.append(config_change(desired, observed, env_file or "", running))
    if unit.environ.get(units.HASH_VAR) != units.marker_of(text) and not reasons:
        file_text = observed.content(unit_path(desired, unit.name))
        if running and running != desired.release.version:
            reasons.append(f"runs release {running}, desired {desired.release.version}")
        elif file_text is not None and file_text != text:
            reasons.append(f"unit changed ({units.classify(file_text, text).describe()})")
        else:
            reasons.append("the running process was started from an older unit definition")
    return reasons


def retire_unit(desired: DesiredState, observed: Observed, name: str, why: str) -> list[Action]:
    """Stop, disable and remove a unit this desired state no longer runs (after the proxy switch)."""
    unit = observed.unit(name)
    path = unit_path(desired, name)
    out: list[Action] = []
    if unit.is_active or unit.is_crashing:
        out.append(Systemctl(why, verb="stop", unit=name))
    if unit.is_enabled:
        out.append(Systemctl(why, verb="disable", unit=name))
    if observed.file(path) is not None:
        backup = is_foreign(observed.content(path))
        out += [
            RemoveFile(why, path=path, backup=backup),
            DaemonReload(f"{name} was removed").at(Phase.RETIRE),
        ]
    return out


def retire_file(observed: Observed, path: str, why: str) -> list[Action]:
    if observed.file(path) is None:
        return []
    return [RemoveFile(why, path=path, backup=is_foreign(observed.content(path)))]
