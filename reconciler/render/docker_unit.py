"""A unit wrapping `docker run`, so systemd keeps the lifecycle as it does for Podman.

What Docker cannot do that Podman does, and what the unit does instead:

- No sd_notify: `podman run --sdnotify=conmon` tells systemd when the container runs, and
  conmon, a child of the unit, is its main process. Docker's container is a child of
  containerd's shim, outside the unit's cgroup; the only process systemd can own is the
  `docker run` client. So the client runs attached (no `-d`) as the main process of a
  `Type=exec` unit: it lives exactly as long as the container, its exit status is the
  container's (so Restart=on-failure works), and the container's output reaches the
  journal through it. Readiness was never the unit's business anyway: the health gate
  polls the app, for both runtimes.
- No `--replace`: a container left by a client that was killed (SIGKILL, a daemon
  restart) would block the next start, so ExecStartPre removes one of that name first.
- systemd cannot signal the container itself (it is not in the unit's cgroup): ExecStop
  asks Docker to stop it, with `--init` so the app, not PID 1, gets the SIGTERM; a
  container that is already gone makes ExecStop fail harmlessly (`-`).
- The client, not the container, is what systemd and the observation see: it gets the
  release marker in its own environment (Environment=), where `-e NAME` (no value) hands
  it on into the container together with the EnvironmentFile's variables.

With backend.user the unit is shaped as Podman's is (units.user_lines): User= for the state
folder, `+` on the client's commands, `--user UID:GID` for the container.
"""

from __future__ import annotations

from reconciler.render.units import (
    DOCKER,
    HASH_VAR,
    HEADER,
    RELEASE_VAR,
    ServiceSpec,
    container_argv,
    container_unit_end,
    container_words,
    user_lines,
    with_marker,
)


def render_docker_service(spec: ServiceSpec) -> str:
    assert spec.image is not None
    service = ["--init", "--name=%N", f"--env={HASH_VAR}"]  # no value: docker passes on the client's
    if spec.port is not None:
        service.append("--env=PORT")
    if spec.stop_signal != "SIGTERM":
        service.append(f"--stop-signal={spec.stop_signal}")
    words = container_words(spec)
    run = [f"{words[0]} {words[1]}", *service, *words[2:], *container_argv(spec)]
    lines = [
        HEADER.format(app=spec.app).rstrip("\n"),
        "[Unit]",
        f"Description={spec.app} {spec.role} (container)",
        "After=network.target docker.service",
        "Requires=docker.service",
        "",
        "[Service]",
        "Type=exec",
    ]
    user, root = user_lines(spec)
    lines += user
    if spec.release is not None:
        lines.append(f"Environment={RELEASE_VAR}={spec.release}")
    if spec.port is not None:
        lines.append(f"Environment=PORT={spec.port}")
    lines += [
        f"ExecStartPre=-{root}{DOCKER} rm -f %N",
        f"ExecStart={root}" + " \\\n    ".join(run),
        f"ExecStop=-{root}{DOCKER} stop -t {int(spec.stop_timeout)} %N",
        f"ExecStopPost=-{root}{DOCKER} rm -f %N",
        "SuccessExitStatus=143",
    ]
    return with_marker("\n".join([*lines, *container_unit_end(spec)]) + "\n")
