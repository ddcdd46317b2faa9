"""Rollback, as a pure function: from the host's recorded last good state to a plan.

The same function serves twice:

- for a failure that has not happened yet: the plan travels with every apply and the agent
  runs it under the same lock the moment an action fails, so the controller dying mid-gate
  changes nothing. It is made before the failure, so it cannot know what the failure will
  have left; every action in it is guarded (`unless_runs`, `unless_gated`, `unless_loaded`,
  and writes that skip what is already there) and restores the good state from wherever the
  forward plan stopped;
- for a host whose desired configuration is quarantined: only the actions still needed
  (`only_needed`), so a host that already serves its good state is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from reconciler.observe.snapshot import GoodState, Observed, unit_path
from reconciler.plan import images, policy, proxy, routing
from reconciler.plan.actions import (
    Action,
    CheckHealth,
    DaemonReload,
    Phase,
    RecordGood,
    RemoveFile,
    RestoreDatabase,
    Rollback,
    SetSymlink,
    SnapshotDatabase,
    Systemctl,
    WriteFile,
)
from reconciler.plan.data import snapshot_path
from reconciler.plan.good import serving_baseline
from reconciler.plan.strategies import Strategy
from reconciler.render import envfile, units
from reconciler.spec.model import DesiredState

COLOURS = ("blue", "green")


def serving_state(desired: DesiredState, observed: Observed, strategy: Strategy) -> GoodState | None:
    """What serves now, as a state that could be restored: its processes run exactly the files
    on disk (an interrupted run may have left others), and if this reconciler started them
    (they carry a configuration) each passed its gate. A process someone else started (a host
    set up by hand, or by an older reconciler) carries none and was never gated."""
    base = serving_baseline(desired, observed)
    if base is None or not _files_run(desired, observed, base):
        return None
    fragment = base.files.get(desired.proxy.fragment(desired.app))
    if fragment is not None and not routing.loaded(desired, observed, fragment.content):
        # Caddy does not run the fragment on disk (a run killed between writing it and
        # reloading Caddy, or a configuration loaded by someone else): restoring "what serves"
        # from disk would route elsewhere than what serves. The recorded good states hold
        # what was served.
        return None
    if base.config and not all(observed.gated(u) for u in base.gates):
        return None
    if base.config and observed.quarantined(base.config, base.version):
        return None
    return base


def target(desired: DesiredState, observed: Observed, strategy: Strategy, failing: str) -> GoodState | None:
    """What a failure goes back to: what serves now, when it is a gated state of ours (it is
    recorded as good first, see `checkpoint`); else the newest recorded good state that is not
    the failing configuration and can still be restored (its release, and its image, are on
    the host); else, on a host with no record at all, what serves now, whoever started it."""
    now = serving_state(desired, observed, strategy)
    if now is not None and now.config and now.config != failing:
        return now
    for state in observed.good:
        if state.config == failing or state.version not in observed.releases:
            continue
        if state.image and desired.release.image and state.image not in observed.images:
            continue
        caddy = state.files.get(state.caddyfile)
        if not images.served_frontends(desired, caddy.content if caddy else None) <= set(observed.frontends):
            continue  # the static frontend it served is gone
        return state
    if observed.good or now is None or now.config:
        return None
    return now


def checkpoint(
    desired: DesiredState, observed: Observed, strategy: Strategy
) -> tuple[RecordGood, GoodState] | None:
    """Record what serves now as good before a plan changes it, when it is a gated state of
    ours that is not recorded yet (a run that gated it was interrupted before recording): so a
    run that dies half-way still leaves the next one something to go back to. Returns the
    action and the good state it records."""
    now = serving_state(desired, observed, strategy)
    if now is None or not now.config or now.config == strategy.config:
        return None
    if observed.good and observed.good[0].config == now.config:
        return None
    caddy = (desired.proxy.caddyfile, now.caddyfile)
    image = observed.releases[now.version].image if now.version in observed.releases else None
    recorded = replace(
        now, image=image, files={p: f for p, f in now.files.items() if p != desired.proxy.caddyfile}
    )
    return (
        RecordGood(
            f"{now.version} serves with every process gated, but is not recorded as good",
            config=now.config,
            version=now.version,
            image=image,
            strategy=now.strategy,
            files=tuple(p for p, f in now.files.items() if f is not None and p not in caddy),
            links=tuple(now.links),
            gates=now.gates,
            caddyfile=now.caddyfile,
            ports=proxy.ports(desired, observed),
        ).at(Phase.CHECKPOINT),
        recorded,
    )


def _files_run(desired: DesiredState, observed: Observed, base: GoodState) -> bool:
    """The files a baseline would restore are the ones its processes were started from."""
    configs = {envfile.config_of(f.content) for f in base.files.values() if f} - {None}
    for unit in base.gates:
        recorded = base.files.get(unit_path(desired, unit))
        process = observed.unit(unit)
        if units.marker_of(recorded.content if recorded else None) != process.environ.get(units.HASH_VAR):
            return False
        if process.config and (base.config != process.config or configs - {process.config}):
            return False
    return True


def managed_units(desired: DesiredState) -> tuple[str, ...]:
    return (desired.backend_unit, desired.frontend_unit, *(desired.colour_unit(c) for c in COLOURS))


def restore(
    desired: DesiredState,
    observed: Observed,
    good: GoodState,
    *,
    failing: str,
    disturbed: Iterable[str] = (),
    only_needed: bool,
) -> list[Action]:
    """Actions that bring the host back to `good`; ordered by phase by the caller."""
    why = f"back to the last good state, {good.version}"
    unit_dir = desired.layout.units + "/"
    caddy_files = (desired.proxy.caddyfile, desired.proxy.fragment(desired.app))
    out: list[Action] = []
    for path, f in sorted(good.files.items()):
        if path in caddy_files:
            continue
        have = observed.file(path)
        if f is None:
            if not only_needed or have is not None:
                out.append(RemoveFile(why, path=path).at(Phase.WRITE))
            continue
        if only_needed and have is not None and have.content == f.content and have.mode == f.mode:
            continue
        secret = not path.startswith(unit_dir)  # the environment files
        group = desired.backend.user if secret else None
        out.append(WriteFile(why, path=path, content=f.content, mode=f.mode, group=group, secret=secret))
    for path, link in sorted(good.links.items()):
        have_link = observed.link(path)
        if only_needed and have_link is not None and have_link.target == link:
            continue
        out.append(SetSymlink(why, path=path, target_path=link))
    gated = tuple(good.gates)
    wrote_unit = any(isinstance(a, WriteFile) and a.path.startswith(unit_dir) for a in out)
    if not only_needed or wrote_unit or any(observed.unit(u).need_daemon_reload for u in gated):
        out.append(DaemonReload(why, unless_clean=gated))
    for unit, params in good.gates.items():
        want = _markers(good, desired, unit)
        now = observed.unit(unit)
        runs = now.is_active and all(now.environ.get(k) == v for k, v in want.items())
        if not (only_needed and runs):
            out.append(Systemctl(why, verb="restart", unit=unit, unless_runs=want))
        if not (only_needed and runs and observed.gated(unit)):
            out.append(CheckHealth.from_params(f"{unit}: {why}", unit, params, unless_gated=True))
    out += _caddy(desired, observed, good, why, only_needed)
    stop = set(disturbed)
    if only_needed:
        stop |= {u for u in managed_units(desired) if observed.unit(u).config == failing}
    for unit in sorted(stop - set(gated)):
        now = observed.unit(unit)
        if not only_needed or now.is_active or now.is_crashing:
            reason = "it was started with the configuration that failed"
            out.append(Systemctl(reason, verb="stop", unit=unit))
    return out


def _markers(good: GoodState, desired: DesiredState, unit: str) -> dict[str, str]:
    """What the unit's process must carry to run the good state (what `unless_runs` checks)."""
    text = good.files.get(unit_path(desired, unit))
    want: dict[str, str] = {}
    marker = units.marker_of(text.content if text else None)
    if marker:
        want[units.HASH_VAR] = marker
    if good.config and text is not None and "EnvironmentFile=" in text.content:
        want[envfile.CONFIG_VAR] = good.config
    return want


def _caddy(
    desired: DesiredState, observed: Observed, good: GoodState, why: str, only_needed: bool
) -> list[Action]:
    """The app's fragment as it was (and, for a host adopted from hand-made files, the main
    Caddyfile as it was, the fragment removed first so every step validates). A fragment
    recorded by an older reconciler gets the maintenance switch every fragment has now."""
    main, fragment = desired.proxy.caddyfile, desired.proxy.fragment(desired.app)
    wanted = {p: good.files[p] for p in (fragment, main) if p in good.files}
    if fragment not in wanted:
        return []
    contents = {p: None if f is None else f.content for p, f in wanted.items()}
    if contents[fragment] is not None:
        contents[fragment] = proxy.upgrade_fragment(desired, str(contents[fragment]))
    writes: list[Action] = []
    for path, content in sorted(contents.items(), key=lambda item: item[1] is not None):  # removals first
        if only_needed and observed.content(path) == content:
            continue
        writes.append(proxy.write(desired, observed, why, path, content))
    if only_needed and not writes and routing.loaded(desired, observed, contents[fragment]):
        return []
    return [*writes, proxy.load(desired, observed, why, unless_loaded=True)]


def for_failure(
    desired: DesiredState, observed: Observed, strategy: Strategy, actions: tuple[Action, ...]
) -> Rollback | None:
    """The rollback an apply carries, when any of its actions would call for one."""
    if not any(policy.undoes(a) for a in actions):
        return None
    failing = strategy.config
    disturbed = sorted(
        {a.unit for a in actions if isinstance(a, Systemctl) and a.verb in ("start", "restart")}
    )
    good = target(desired, observed, strategy, failing)
    version = desired.release.version
    if good is None:
        # Nothing to go back to. A colour that failed never got traffic: do not leave it looping.
        colours = {desired.colour_unit(c) for c in COLOURS}
        stops = [
            Systemctl("it failed, and there is no earlier state to go back to", verb="stop", unit=u)
            for u in disturbed
            if u in colours
        ]
        return Rollback(tuple(stops), None, failing, version)
    back = restore(desired, observed, good, failing=failing, disturbed=disturbed, only_needed=False)
    data = desired.data
    took = {a.snapshot for a in actions if isinstance(a, SnapshotDatabase)}
    snapshot = snapshot_path(desired, good.version)
    if data.sqlite and data.restore_on_rollback and snapshot in took:
        back.append(
            RestoreDatabase(
                f"the data as it was when {good.version} was left (data.restore_on_rollback)",
                database=data.sqlite,
                snapshot=snapshot,
                # Nothing may write while the copy lands: the live colour stops too, and the
                # guarded restarts above (phase RESTART, after RESTORE) start it again.
                units=tuple(sorted(set(disturbed) | set(good.gates) - {desired.frontend_unit})),
                only_if_taken=True,
            )
        )
    return Rollback(tuple(sorted(back, key=lambda a: a.phase)), good.version, failing, version)
