"""`reconcile exec`: which release a one-off command runs from, with which environment file,
as whom, decided from the desired state and the host as observed. Pure, like the planner.

The command runs as release tasks run (the same fields, the same transient unit on the
host): from the release's folder, or in a container of its image, with the environment file
of the backend that runs that release (the serving one when no process runs it) and
`backend.user`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from reconciler.observe.snapshot import Observed
from reconciler.plan import images
from reconciler.plan.planner import serving_release
from reconciler.plan.releases import running_release
from reconciler.plan.services import backend_spec
from reconciler.plan.strategies.blue_green import routed_colour
from reconciler.plan.tasks import absolute_argv
from reconciler.render import units
from reconciler.spec.model import DesiredState

COLOURS = ("blue", "green")


class NotRunnable(Exception):
    """The command cannot run on this host as asked; nothing was started."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class OneOff:
    """What the host agent needs to start the process: run_task's fields."""

    release: str
    argv: tuple[str, ...]
    workdir: str
    env_file: str
    user: str | None
    state_directory: str | None
    container: tuple[str, ...]

    def wire(self) -> dict[str, object]:
        return {
            "release": self.release,
            "argv": list(self.argv),
            "workdir": self.workdir,
            "env_file": self.env_file,
            "user": self.user,
            "state_directory": self.state_directory,
            "container": list(self.container),
        }


def one_off(
    desired: DesiredState,
    observed: Observed,
    argv: tuple[str, ...],
    release: str | None = None,
    *,
    interactive: bool = False,
    tty: bool = False,
) -> OneOff:
    """The one-off process for `argv`, from `release` (default: the one serving)."""
    host = observed.hostname
    on_host = ", ".join(sorted(observed.releases)) or "none"
    version = release or serving_release(desired, observed)
    if version is None:
        raise NotRunnable(
            f"nothing serves {desired.app} on {host}, so there is no release to run the command from",
            hint=f"name one with --release VERSION (releases on the host: {on_host})",
        )
    state = observed.releases.get(version)
    if state is None:
        raise NotRunnable(
            f"release {version} is not on {host}",
            hint=f"releases on the host: {on_host}; deploy {version} first, or pick one of them",
        )
    env_file = _env_file(desired, observed, version)
    if observed.file(env_file) is None:
        raise NotRunnable(
            f"{env_file}, the environment file release {version} would run with, is not on {host}",
            hint="run `reconcile --once` to write it, then try again",
        )
    release_dir = desired.layout.release_dir(version)
    image_root = desired.release.image_root
    runtime = images.runtime_of(desired, observed)
    spec = replace(
        backend_spec(desired, release_dir, desired.backend.port, env_file, runtime=runtime),
        image=state.image,
        release=version,
        workdir=image_root if state.image else release_dir,
        shared=tuple((f"{desired.layout.shared}/{p}", f"{image_root}/{p}") for p in desired.shared)
        if state.image
        else (),
    )
    if state.image is None:
        return OneOff(
            version,
            absolute_argv(argv, release_dir),
            release_dir,
            env_file,
            desired.backend.user,
            spec.state_directory,
            (),
        )
    words = units.container_words(spec)
    # Attached as `docker run -it` would be; --init passes a stop's signal to the command.
    flags = ["--init", *(["--interactive"] if interactive else []), *(["--tty"] if tty else [])]
    container = (*words[:-1], *flags, words[-1])
    return OneOff(version, argv, "/", env_file, None, spec.state_directory, container)


def _env_file(desired: DesiredState, observed: Observed, version: str) -> str:
    """The environment file of the backend that runs `version`; else the serving one's."""
    if desired.strategy != "blue-green":
        return desired.layout.env_file
    running = [c for c in COLOURS if running_release(observed.unit(desired.colour_unit(c))) == version]
    colour = running[0] if running else routed_colour(desired, observed)
    if colour is None:
        present = [c for c in COLOURS if observed.file(desired.colour_env_file(c)) is not None]
        colour = present[0] if present else "blue"
    return desired.colour_env_file(colour)
