"""A command run the way the backend runs, as a transient systemd unit: from its release
folder (or in a container of its image), with its environment file, as its user. Release
tasks and `reconcile exec` both start their processes with this one command line, so a
one-off command sees exactly what a migration sees.

Imports nothing of the agent: `reconcile exec` sends this module to the host with only the
few others it needs (see attach.py).
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def systemd_literal(word: str) -> str:
    """systemd expands `$NAME` in a transient unit's command line from the unit's environment
    (the environment file included); `$$` is a literal `$`. Words reach the process as given."""
    return word.replace("$", "$$")


def transient_argv(
    spec: Json,
    unit: str,
    *,
    pty: bool = False,
    timeout: float | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """`systemd-run` for one process of `spec` (the fields a run_task action carries: argv,
    workdir, env_file, release, user, state_directory, container); it waits for the process and exits with its
    status. pty: the process gets a terminal of its own, joined to systemd-run's stdin and
    stdout; otherwise it inherits them (`--pipe`). extra: more `--property=` words."""
    argv = [
        "systemd-run",
        "--quiet",
        "--wait",
        "--pty" if pty else "--pipe",
        "--collect",
        "--service-type=exec",
        f"--unit={unit}",
        f"--property=WorkingDirectory={spec['workdir']}",
        f"--property=EnvironmentFile={spec['env_file']}",
        f"--setenv=RECONCILER_RELEASE={spec['release']}",
        *extra,
    ]
    if timeout is not None:
        argv.append(f"--property=RuntimeMaxSec={int(timeout)}")
    if spec.get("state_directory"):
        argv.append(f"--property=StateDirectory={spec['state_directory']}")
    if spec.get("user") and not spec["container"]:
        argv.append(f"--property=User={spec['user']}")
    return [*argv, "--", *(systemd_literal(w) for w in [*spec["container"], *spec["argv"]])]
