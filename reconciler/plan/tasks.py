"""Release tasks: migrations before traffic moves, anything else once the new release serves.
Each runs once per configuration (what succeeded is recorded on the host), as the backend
would run, and a failing migration finds the database as this apply's snapshot had it."""

from __future__ import annotations

from reconciler.observe.snapshot import Observed
from reconciler.plan.actions import Action, Phase, RunTask, SnapshotDatabase
from reconciler.plan.data import snapshot_path
from reconciler.render import units
from reconciler.spec.model import DesiredState


def task_actions(
    desired: DesiredState,
    observed: Observed,
    spec: units.ServiceSpec,
    config: str,
    serving: str | None,
    planned: list[Action],
) -> list[Action]:
    """`spec`: the service the tasks run like; `serving`: the release serving now, whose data
    a failing migration must find again."""
    tasks = desired.release.tasks
    done = observed.tasks.get(config, {})
    out: list[Action] = []
    snapshot = None
    database = desired.data.sqlite
    if tasks.before_switch and database and done.get("before_switch", 0) < len(tasks.before_switch):
        snapshot = snapshot_path(desired, serving or desired.release.version)
        if not any(isinstance(a, SnapshotDatabase) and a.snapshot == snapshot for a in planned):
            why = "a before_switch task may change the database: keep it as it is"
            out.append(SnapshotDatabase(why, database=database, snapshot=snapshot))
    for when, phase, commands in (
        ("before_switch", Phase.MIGRATE, tasks.before_switch),
        ("after_switch", Phase.AFTER_SWITCH, tasks.after_switch),
    ):
        for index, argv in enumerate(commands):
            if done.get(when, 0) > index:
                continue
            out.append(
                RunTask(
                    f"{when} task {index + 1} of {len(commands)} has not run for this configuration",
                    when=when,
                    index=index,
                    config=config,
                    argv=absolute_argv(argv, spec.workdir) if spec.image is None else argv,
                    workdir=spec.workdir if spec.image is None else "/",
                    env_file=spec.env_file or "",
                    release=desired.release.version,
                    app=desired.app,
                    timeout=tasks.timeout,
                    user=spec.user,
                    container=tuple(units.container_words(spec)) if spec.image else (),
                    database=database if when == "before_switch" else None,
                    snapshot=snapshot if when == "before_switch" else None,
                    state_directory=spec.state_directory,
                ).at(phase)
            )
    return out


def absolute_argv(argv: tuple[str, ...], workdir: str) -> tuple[str, ...]:
    """As for the backend: a first word with a '/' that is not absolute is in the release."""
    head, *rest = argv
    if "/" in head and not head.startswith("/"):
        head = f"{workdir}/{head.removeprefix('./')}"
    return (head, *rest)
