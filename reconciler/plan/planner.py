"""plan(desired, observed) -> Plan. Pure: no I/O, no clock, no randomness.

Each rule compares one desired fact with one observed fact and emits an action only when they
differ, with the observed fact as the reason; the strategy (single slot or blue-green) knows
which facts make up its desired state. The actions are then ordered by phase, each is told
what the agent must do if it fails, and the plan carries the rollback the agent runs then.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from reconciler.observe.snapshot import Observed
from reconciler.plan import images, manual, policy, proxy, releases, rollback, routing
from reconciler.plan.actions import Action, DaemonReload, Phase, Plan, RecordQuarantine
from reconciler.plan.adopt import adopted
from reconciler.plan.adopt import blockers as adopt_blockers
from reconciler.plan.strategies import Strategy, for_desired
from reconciler.spec.model import DesiredState


def plan(
    desired: DesiredState, observed: Observed, *, retry_quarantined: bool = False, adopt: bool = False
) -> Plan:
    """`adopt`: files this app's files would replace that the reconciler did not write are
    replaced (with a dated backup) instead of stopping the plan."""
    runtime = images.runtime_of(desired, observed) if desired.release.image else None
    strategy = for_desired(desired, runtime)
    fp = strategy.config
    version = desired.release.version
    blockers = tuple(_blockers(desired, observed, adopt))
    if blockers:
        return Plan((), observed.fingerprint, blockers=blockers, config=fp)
    # --- the hold `reconcile rollback` leaves (plan/manual.py) ---------------------------
    # While the desired file names what it named when the host was held, runs keep the held
    # state (drift of it corrected) and move nowhere else. A file that names something else
    # is planned as if there were no hold, and its run ends the hold.
    if observed.hold is not None:
        hold = manual.holding(observed, fp)
        if hold is None:
            moved = plan(
                desired, replace(observed, hold=None), retry_quarantined=retry_quarantined, adopt=adopt
            )
            return replace(moved, actions=(*moved.actions, *manual.end_hold(observed, fp)))
        kept, blocker = manual.keep_held(desired, observed, hold)
        ordered = tuple(sorted(_merge_daemon_reloads(kept), key=lambda a: a.phase))
        return Plan(
            ordered,
            observed.fingerprint,
            blockers=(blocker,) if blocker else (),
            held=hold.describe(),
            config=fp,
        )
    # --------------------------------------------------------------------------------------
    entry = observed.quarantined(fp, version)
    if entry is not None and not retry_quarantined:
        return _keep_last_good(desired, observed, strategy, entry.reason or "it failed before")
    actions = strategy.actions(observed)
    saved = rollback.checkpoint(desired, observed, strategy) if actions else None
    if saved is not None:
        # Plan again as if it were recorded already: the strategy then records the state it
        # leaves behind as the newer one.
        record, state = saved
        actions = [record, *strategy.actions(replace(observed, good=(state, *observed.good)))]
    if entry is not None:
        actions.append(
            RecordQuarantine(f"retrying {version} on purpose", key=fp, version=version, clear=True)
        )
    actions += releases.prune(desired, observed, actions)
    actions += images.prune_frontends(desired, observed, actions)
    actions += proxy.maintenance_actions(desired, observed)
    ordered = tuple(policy.with_policy(sorted(_merge_daemon_reloads(actions), key=lambda a: a.phase)))
    back = rollback.for_failure(desired, observed, strategy, ordered)
    return Plan(ordered, observed.fingerprint, rollback=back, config=fp, adopting=adopted(ordered))


def _keep_last_good(desired: DesiredState, observed: Observed, strategy: Strategy, why: str) -> Plan:
    """The desired configuration failed before: nothing of it is tried again, but the host is
    brought back to its last good state if an interruption left it anywhere else."""
    fp = strategy.config
    good = rollback.target(desired, observed, strategy, fp)
    actions: list[Action] = []
    if good is not None:
        actions = rollback.restore(desired, observed, good, failing=fp, only_needed=True)
    actions += proxy.maintenance_actions(desired, observed)
    ordered = tuple(sorted(_merge_daemon_reloads(actions), key=lambda a: a.phase))
    return Plan(ordered, observed.fingerprint, quarantined=why, config=fp)


def _blockers(desired: DesiredState, observed: Observed, adopt: bool) -> Iterable[str]:
    yield from proxy.blockers(desired, observed, adopt)
    yield from routing.blockers(desired, observed)
    if not adopt:
        yield from adopt_blockers(desired, observed)
    if not observed.commands.get("systemctl"):
        yield "systemctl was not found on the host: the reconciler manages systemd services"
    if not observed.commands.get("caddy"):
        yield "caddy is not installed on the host: install it (e.g. `apt-get install caddy`) and run again"
    yield from observed.state_errors
    if desired.release.image is not None and observed.runtime_error:
        yield observed.runtime_error
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
                out[i] = DaemonReload(f"{out[i].reason}; {action.reason}").at(action.phase)
                continue
            seen[action.phase] = len(out)
        out.append(action)
    return out


def serving_release(desired: DesiredState, observed: Observed) -> str | None:
    """The release that serves traffic on this host: the one the backend Caddy routes to runs."""
    return routing.serving_release(desired, observed)


def serving_since(desired: DesiredState, observed: Observed) -> str | None:
    """Since when the serving release serves (ISO time, UTC), from the host's records: the
    newest good state's `since` when it is that release, else (after a rollback, or on a host
    set up by hand) when the process serving it passed its gate. None when nothing says."""
    version = serving_release(desired, observed)
    if version is None:
        return None
    if observed.good and observed.good[0].version == version and observed.good[0].since:
        return observed.good[0].since
    passed = [
        r.at for unit, r in observed.gates.items() if r.release == version and r.at and observed.gated(unit)
    ]
    return min(passed) if passed else None
