"""Starting systemd-nspawn for one host and finding/stopping its processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.testhost.errors import TesthostError
from tests.testhost.layout import STATE_ROOT

#: systemd-nspawn's exit status when the container's systemd rebooted it.
REBOOT_STATUS = 133

#: nspawn's own environment: nothing from the caller's (pip/proxy/pyenv settings).
NSPAWN_ENV: dict[str, str] = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

#: Moves the shell into each cgroup given, then execs nspawn in its place. Doing
#: the move before exec (rather than after Popen returns) means nspawn never runs
#: a single instruction in the caller's cgroup, and it is thread-safe, unlike a
#: preexec_fn.
_CGROUP_EXEC = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do '
    'echo $$ > "$1/cgroup.procs" || exit 97; shift; n=$((n-1)); done; exec "$@"'
)


#: What Docker needs of nspawn, each found by the error without it: the unified cgroup
#: hierarchy (v1 controllers are read-only inside: "mkdir /sys/fs/cgroup/cpuset/docker:
#: read-only"), keyctl() ("unable to create session key: operation not permitted") and
#: bpf() ("bpf_prog_query(BPF_CGROUP_DEVICE) ... not permitted").
DOCKER_ENV: dict[str, str] = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
DOCKER_OPTIONS: tuple[str, ...] = ("--system-call-filter=@keyring", "--system-call-filter=bpf")


def argv(
    name: str, merged: Path, share: Path, repo: Path, container_storage: Path, *, docker: bool = False
) -> list[str]:
    # --register=no --keep-unit: there is no systemd/machined on this machine to
    # register with ("Failed to open system bus" otherwise).
    # --network-veth: the container gets host0, this machine ve-<name>; traffic
    # stays between the two. Never --private-network (no link at all).
    # --console=read-only rather than pipe: with pipe the container has no
    # /dev/console and systemd's unit status lines are lost; read-only gives it a
    # pty whose output nspawn copies into our log, ignoring input.
    return [
        "systemd-nspawn",
        "--boot",
        f"--directory={merged}",
        f"--machine={name}",
        "--register=no",
        "--keep-unit",
        "--console=read-only",
        "--network-veth",
        "--link-journal=no",
        f"--bind-ro={repo}:/src",
        f"--bind={share}:/share",
        # Podman's storage, fresh per boot, on this machine's file system: on the
        # host's own root (an overlay) Podman's overlay driver refuses to work
        # ("'overlay' is not supported over overlayfs, a mount_program is
        # required") and there is no /dev/fuse for fuse-overlayfs.
        f"--bind={container_storage}:{'/var/lib/docker' if docker else '/var/lib/containers'}",
        *(DOCKER_OPTIONS if docker else ()),
        # Arguments for the container's systemd: print unit status lines to the
        # console (= our log file) even though it is not a tty, so a failed
        # boot's error message shows what failed.
        "systemd.show_status=1",
        "systemd.log_color=0",
    ]


def start(
    command: list[str], cgroups: list[Path], log_path: Path, *, docker: bool = False
) -> subprocess.Popen[bytes]:
    """Start nspawn in its own session (Ctrl-C in a terminal reaches only us; we
    stop the host in order) with stdin /dev/null and output to log_path."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            ["/bin/sh", "-c", _CGROUP_EXEC, "sh", str(len(cgroups)), *map(str, cgroups), *command],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**NSPAWN_ENV, **(DOCKER_ENV if docker else {})},
        )


def _status_field(pid: int, field: str) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def find_leader(nspawn_pid: int, *, timeout: float, alive: Callable[[], bool]) -> int:
    """The container's PID 1: the child of nspawn that is PID 1 in its own PID namespace."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
        except OSError:
            children = []
        for child in map(int, children):
            nspid = (_status_field(child, "NSpid") or "").split()
            if len(nspid) >= 2 and nspid[-1] == "1":
                return child
        if not alive():
            raise TesthostError("systemd-nspawn exited before the container's init started")
        if time.monotonic() > deadline:
            raise TesthostError(f"no container init under nspawn pid {nspawn_pid} after {timeout:g}s")
        time.sleep(0.01)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def harness_processes() -> dict[int, str]:
    """nspawn processes this harness started (any process), pid -> host name.

    Recognised by their command line alone: a --directory inside our state root
    and the matching --machine name. Other nspawn containers are never touched.
    """
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        args = _cmdline(int(entry.name))
        if not args or not args[0].endswith("systemd-nspawn"):
            continue
        machine = next((a.split("=", 1)[1] for a in args if a.startswith("--machine=")), None)
        directory = next((a.split("=", 1)[1] for a in args if a.startswith("--directory=")), None)
        if machine and directory == str(STATE_ROOT / machine / "merged"):
            found[int(entry.name)] = machine
    return found


def descendants(pid: int) -> list[int]:
    """All descendants of pid, parents before children."""
    found: list[int] = []
    queue = [pid]
    while queue:
        current = queue.pop(0)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found.extend(children)
            queue.extend(children)
    return found


def kill_tree(pid: int, *, timeout: float = 5) -> None:
    """SIGKILL everything below pid until pid exits by itself; SIGKILL it last.

    For nsenter: its child lives in the container's PID namespace. Killing
    nsenter first (or its whole process group at once) orphans that child to
    *this machine's* init, which may be slow to reap it; until it is reaped the
    zombie sits in the container's PID namespace, shows up in `ps` there and
    blocks the container's exit at stop. So the child dies first and nsenter,
    which waits for it, reaps it and exits normally. The loop also catches a
    child that nsenter forks only after we started.
    """
    deadline = time.monotonic() + timeout
    while not _gone(pid, None) and time.monotonic() < deadline:
        for target in reversed(descendants(pid)):  # deepest first
            if not _gone(target, None):
                send(target, signal.SIGKILL)
        time.sleep(0.01)
    if not _gone(pid, None):
        send(pid, signal.SIGKILL)


def send(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _gone(pid: int, proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is not None and proc.pid == pid:
        return proc.poll() is not None
    state = _status_field(pid, "State")
    return state is None or state.startswith("Z")


def _wait_gone(pids: list[int], proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not all(_gone(pid, proc) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


#: How long an orderly halt may take before nspawn is told to hurry (it takes
#: ~0.15 s here).
HALT_GRACE = 3.0


def terminate(
    pids: list[int],
    proc: subprocess.Popen[bytes] | None,
    *,
    timeout: float = 10,
    graceful: bool = True,
) -> None:
    """Stop nspawn processes: SIGTERM, wait, SIGTERM again, wait, SIGKILL.

    nspawn answers the first SIGTERM by asking the container's systemd to halt;
    a second one makes it kill the container at once ("Send SIGTERM again to
    trigger immediate termination"). The second is needed when the first came
    before the container's systemd had installed its signal handlers (a host
    stopped while still booting): PID 1 of a PID namespace drops signals it has
    no handler for, and nspawn would wait forever. graceful=False skips the wait
    for an orderly halt.

    `proc` is our own Popen for one of the pids, if we have one, so it gets reaped.
    """
    deadline = time.monotonic() + timeout
    for pid in pids:
        send(pid, signal.SIGTERM)
    if not _wait_gone(pids, proc, min(HALT_GRACE, timeout) if graceful else 0.1):
        for pid in pids:
            send(pid, signal.SIGTERM)
    if not _wait_gone(pids, proc, max(0.5, deadline - time.monotonic())):
        for pid in pids:
            send(pid, signal.SIGKILL)
        if not _wait_gone(pids, proc, 5):
            raise TesthostError(f"systemd-nspawn {pids} survives SIGKILL")
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired as exc:
            raise TesthostError(f"systemd-nspawn pid {proc.pid} survives SIGKILL") from exc
