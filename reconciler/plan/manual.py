"""`reconcile rollback [VERSION]` as pure functions: which recorded good state to go back to,
the plan that goes there, the hold it leaves on the host, and what a run plans while the host
is held.

A rollback by hand goes to a state the host itself recorded as good (every process in it
passed its gate: `good.json`), restored whole as an automatic rollback restores it
(`rollback.restore`): release, units, environment files, image, Caddy. What it leaves is a
hold: while the desired file still names the configuration it named when the hold was made,
every run keeps the host at the held state (restarting a stopped unit of it, putting back a
hand-edited file) and moves it nowhere else. A file that names another configuration (a new
commit) ends the hold, and so does `reconcile resume`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from reconciler.observe.snapshot import GoodState, Hold, Observed
from reconciler.plan import images, proxy, rollback
from reconciler.plan.actions import (
    Action,
    CheckHealth,
    Phase,
    Plan,
    RecordGood,
    RecordHold,
    RestoreDatabase,
    Rollback,
    SnapshotDatabase,
    Systemctl,
)
from reconciler.plan.data import snapshot_path
from reconciler.plan.good import serving_baseline
from reconciler.plan.strategies import for_host
from reconciler.spec.model import DesiredState

# `restore` stops units that run the configuration named here; a hold stops nothing (a warm
# blue-green colour left behind stays warm, so ending the hold can be a switch back too).
_STOP_NOTHING = ""


@dataclass(frozen=True)
class Request:
    """What the person asked for: a release, or (None) the previous good state."""

    version: str | None
    by: str
    reason: str = ""
    commit: str | None = None  # the desired file's commit, recorded with the hold


@dataclass(frozen=True)
class Candidate:
    """A recorded good state, and whether a rollback can go there."""

    state: GoodState
    serving: bool  # it is what serves now
    blocked: str | None  # why it cannot be restored; None: it can


@dataclass(frozen=True)
class Choice:
    target: GoodState | None
    error: str | None = None  # why there is none, and what there is
    candidates: tuple[Candidate, ...] = ()


def family(strategy: str) -> str:
    return "blue-green" if strategy == "blue-green" else "single-slot"


def serving_state(desired: DesiredState, observed: Observed) -> GoodState | None:
    """What serves now: the unit Caddy routes to, with its files as they are on disk (gated or
    not)."""
    return serving_baseline(desired, observed)


def serving_config(desired: DesiredState, observed: Observed) -> str | None:
    base = serving_state(desired, observed)
    return (base.config or None) if base is not None else None


def holding(observed: Observed, config: str) -> Hold | None:
    """The hold, while the desired configuration is still the one it named when it was made."""
    hold = observed.hold
    return hold if hold is not None and hold.desired_config == config else None


def candidates(desired: DesiredState, observed: Observed) -> tuple[Candidate, ...]:
    serving = serving_config(desired, observed)
    return tuple(
        Candidate(state, state.config == serving, _blocked(desired, observed, state))
        for state in observed.good
    )


def _blocked(desired: DesiredState, observed: Observed, state: GoodState) -> str | None:
    if state.version not in observed.releases:
        return f"release {state.version} is no longer on the host (pruned)"
    if family(state.strategy) != family(desired.strategy):
        return (
            f"it was recorded under strategy {state.strategy}, and the desired state says {desired.strategy}"
        )
    if state.image and not desired.release.image:
        return f"it ran the image {state.image}, and the desired state runs a release folder"
    if state.image and state.image not in observed.images:
        return f"its image {state.image} is no longer on the host"
    caddy = state.files.get(state.caddyfile)
    if not images.served_frontends(desired, caddy.content if caddy else None) <= set(observed.frontends):
        return "the static frontend it served is no longer on the host"
    entry = observed.quarantined(state.config, state.version)
    if entry is not None:
        return f"its configuration failed its gate since and is quarantined ({entry.reason})"
    return None


def choose(desired: DesiredState, observed: Observed, version: str | None) -> Choice:
    """Without a version: the newest recorded good state that is not what serves now (and,
    while a hold lasts, not one this hold already rolled back from, so a second rollback goes
    further back). With one: that release's newest restorable good state, which may be what
    serves now (then the rollback only records the hold: a fleet can be rolled back twice)."""
    found = candidates(desired, observed)
    hold = holding(observed, for_host(desired, observed).config)
    passed = set(hold.passed) if hold is not None else set()
    if version is None:
        for c in found:
            if not c.serving and c.blocked is None and c.state.config not in passed:
                return Choice(c.state, candidates=found)
        return Choice(None, "nothing to roll back to: " + _none_left(found, passed), found)
    named = [c for c in found if c.state.version == version]
    usable = [c for c in named if c.blocked is None]
    if usable:
        return Choice(usable[0].state, candidates=found)
    if named:
        why = "; ".join(sorted({str(c.blocked) for c in named}))
        error = f"release {version} cannot be restored: {why}"
    elif version in observed.releases:
        error = (
            f"release {version} is on the host, but no good state of it is recorded: a rollback goes "
            "only to a state that served here with every process gated"
        )
    else:
        error = f"release {version} is not on the host"
    return Choice(None, f"{error}. {can_go_to(found, passed)}", found)


def can_go_to(found: tuple[Candidate, ...], passed: Collection[str] = ()) -> str:
    ok = [c.state for c in found if not c.serving and c.blocked is None]
    if not ok:
        return "Nothing else can be rolled back to on this host (`reconcile releases` shows what is there)."
    names = ", ".join(
        f"{s.version} (good since {s.since or s.at or '?'}"
        + (", rolled back from" if s.config in passed else "")
        + ")"
        for s in ok
    )
    return f"It can go back to: {names}."


def _none_left(found: tuple[Candidate, ...], passed: set[str]) -> str:
    if not found:
        return "no good state is recorded on this host yet (one is recorded when a deploy passes its gates)"
    parts = []
    for c in found:
        if c.serving:
            parts.append(f"{c.state.version} serves now")
        elif c.blocked:
            parts.append(f"{c.state.version}: {c.blocked}")
        elif c.state.config in passed:
            parts.append(f"{c.state.version}: this hold already rolled back from it")
    return (
        "the recorded good states are "
        + "; ".join(parts)
        + (". Name one with `reconcile rollback VERSION`" if passed else "")
    )


def plan_rollback(desired: DesiredState, observed: Observed, target: GoodState, request: Request) -> Plan:
    """The host back to `target`, then held there. Its failure policy is an apply's: a step
    that fails between the first write and the proxy switch sends the host back to what served
    before (nothing is quarantined: the state passed its gates before, and a revert commit may
    still want to try it)."""
    config = for_host(desired, observed).config
    now = serving_state(desired, observed)
    serving = now.config if now is not None and now.config else None
    moving = target.config != serving
    why = f"rolled back by hand to {target.version}"
    actions = [
        a.because(f"{a.unit}: {why}" if isinstance(a, CheckHealth) else why)
        for a in rollback.restore(desired, observed, target, failing=_STOP_NOTHING, only_needed=True)
    ]
    if moving:
        checked = {a.unit for a in actions if isinstance(a, CheckHealth)}
        for unit, params in target.gates.items():
            if unit not in checked:  # a warm colour: gated before, checked again before traffic moves
                why = f"{unit} runs {target.version} and passed its gate before: checked again first"
                actions.append(CheckHealth.from_params(why, unit, params))
        actions += _data(desired, observed, target, now)
        if not observed.good or observed.good[0].config != target.config:
            actions.append(_record_good(desired, observed, target))
    hold = _hold(desired, observed, target, now, request, config)
    if hold is not None:
        # Recorded first, and undone with the rest: a rollback interrupted after its switch
        # leaves the host held (the next run does not bring the bad release back), and one that
        # fails or is interrupted before it puts the hold back as it was.
        actions.append(hold.at(Phase.CHECKPOINT).failing("rollback"))
    ordered = tuple(_on_failure(sorted(actions, key=lambda a: a.phase)))
    return Plan(
        ordered, observed.fingerprint, rollback=_way_back(desired, observed, target, ordered), config=config
    )


def _data(
    desired: DesiredState, observed: Observed, target: GoodState, now: GoodState | None
) -> list[Action]:
    """As a revert would: the data of the release left behind kept, and (restore_on_rollback)
    the target release's data as it was when it was left."""
    data = desired.data
    leaving = now.version if now is not None and now.version != target.version else None
    if data.sqlite is None or leaving is None or leaving not in observed.releases:
        return []
    out: list[Action] = []
    if data.snapshot:
        out.append(
            SnapshotDatabase(
                f"the backend leaves release {leaving}: keep its data as it was",
                database=data.sqlite,
                snapshot=snapshot_path(desired, leaving),
            )
        )
    if data.restore_on_rollback and target.version in observed.snapshots:
        out.append(
            RestoreDatabase(
                f"moving back to {target.version}: its data as it was when it was left "
                "(data.restore_on_rollback)",
                database=data.sqlite,
                snapshot=snapshot_path(desired, target.version),
                units=tuple(u for u in target.gates if u != desired.frontend_unit),
            )
        )
    return out


def _record_good(desired: DesiredState, observed: Observed, target: GoodState) -> RecordGood:
    """Recorded again as the newest good state: it serves again since now, and it is what an
    automatic rollback of the next deploy goes back to."""
    caddy = (desired.proxy.caddyfile, target.caddyfile)
    return RecordGood(
        f"{target.version} serves again, restored by hand",
        config=target.config,
        version=target.version,
        image=target.image,
        strategy=target.strategy,
        files=tuple(p for p, f in target.files.items() if f is not None and p not in caddy),
        links=tuple(target.links),
        gates=target.gates,
        caddyfile=target.caddyfile,
        ports=proxy.ports(desired, observed),
    )


def _hold(
    desired: DesiredState,
    observed: Observed,
    target: GoodState,
    now: GoodState | None,
    request: Request,
    config: str,
) -> RecordHold | None:
    prior = holding(observed, config)
    if prior is not None and prior.config == target.config:
        return None  # held there already
    serving = now.config if now is not None and now.config else ""
    passed = list(prior.passed) if prior is not None else []
    if serving and serving != target.config and serving not in passed:
        passed.append(serving)
    record: dict[str, Any] = {
        "version": target.version,
        "config": target.config,
        "by": request.by,
        "reason": request.reason,
        "origin": now.version if now is not None and serving != target.config else "",
        "origin_config": serving if serving != target.config else "",
        "desired_config": config,
        "desired_version": desired.release.version,
        "commit": request.commit,
        "passed": passed,
    }
    why = (
        f"runs leave the host at {target.version} while the desired file names what it names now "
        f"({desired.release.version}, configuration {config}), until `reconcile resume`"
    )
    return RecordHold(why, hold=record)


_UNDONE_ON_FAILURE = range(Phase.WRITE, Phase.PROXY + 1)


def _on_failure(actions: list[Action]) -> list[Action]:
    return [a.failing("rollback") if a.phase in _UNDONE_ON_FAILURE else a for a in actions]


def _way_back(
    desired: DesiredState, observed: Observed, target: GoodState, actions: tuple[Action, ...]
) -> Rollback | None:
    """What served before, restored if a step fails (the target failing its gate, say) or the
    client goes away half-way: the serving state when it is a gated state of ours, as an
    automatic rollback would go to it, and the hold as it was."""
    if not any(a.on_failure == "rollback" for a in actions):
        return None
    back: list[Action] = []
    back_to = rollback.serving_state(desired, observed, for_host(desired, observed))
    if back_to is not None and back_to.config != target.config:
        started = {a.unit for a in actions if isinstance(a, Systemctl) and a.verb in ("start", "restart")}
        back = rollback.restore(
            desired, observed, back_to, failing=target.config, disturbed=sorted(started), only_needed=False
        )
    else:
        back_to = None
    if any(isinstance(a, RecordHold) for a in actions):
        prior = observed.hold
        record = None if prior is None else {**vars(prior), "passed": list(prior.passed)}
        back.append(RecordHold("the rollback by hand did not complete: the hold as it was", hold=record))
    ordered = tuple(sorted(back, key=lambda a: a.phase))
    return Rollback(ordered, back_to.version if back_to else None, target.config, target.version)


def keep_held(desired: DesiredState, observed: Observed, hold: Hold) -> tuple[list[Action], str | None]:
    """While the hold lasts: only what brings the host back to the held state (a unit stopped
    by hand, a file edited), never a step away from it. Returns (actions, blocker)."""
    state = next((g for g in observed.good if g.config == hold.config), None)
    if state is None:
        return [], (
            f"the host is {hold.describe()}, but that good state ({hold.config}) is no longer "
            "recorded in good.json: `reconcile resume` ends the hold"
        )
    return rollback.restore(desired, observed, state, failing=_STOP_NOTHING, only_needed=True), None


def end_hold(observed: Observed, config: str) -> list[Action]:
    """A hold whose desired file has moved on ends with the run that applies the new file."""
    hold = observed.hold
    if hold is None or hold.desired_config == config:
        return []
    why = (
        f"the desired file names another configuration than when the host was held at {hold.version} "
        f"({hold.desired_version}, {hold.desired_config}): the hold ends"
    )
    return [RecordHold(why, hold=None)]
