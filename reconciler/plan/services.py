"""The units a desired state runs, rendered: the one place the strategies, the release tasks
and the configuration identity (plan/identity.py) take them from."""

from __future__ import annotations

from reconciler.plan import releases
from reconciler.render import units
from reconciler.spec.model import DesiredState


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


def slot_texts(
    desired: DesiredState, runtime: str = "podman", run_as: tuple[int, int] | None = None
) -> dict[str, str]:
    """restart and symlink-swap: unit name -> file content, for the units the state runs."""
    d = desired
    release_dir = releases.release_dir(d, d.release.version)
    spec = backend_spec(d, release_dir, d.backend.port, d.layout.env_file, runtime=runtime, run_as=run_as)
    out = {d.backend_unit: units.render_service(spec)}
    if d.frontend.mode == "dev-server":
        out[d.frontend_unit] = frontend_text(d, release_dir, runtime, run_as)
    return out


def colour_text(
    desired: DesiredState, colour: str, runtime: str = "podman", run_as: tuple[int, int] | None = None
) -> str:
    """blue-green: one colour's unit, running the release its link points to."""
    d = desired
    spec = backend_spec(
        d,
        d.colour_link(colour),
        d.blue_green.port(colour),
        d.colour_env_file(colour),
        f"backend ({colour})",
        runtime,
        run_as,
    )
    return units.render_service(spec)
