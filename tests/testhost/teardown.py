"""Removing everything one host consists of, whether it is ours and running, or a
leftover of a crashed run. Driven by the host's name only, so the same code
serves TestHost.stop() and `python -m tests.testhost cleanup`.

Order matters: processes first (so nothing uses the overlay), then mounts, then
the veth and cgroups, and the state dir last, and only once nothing is mounted
below it: a recursive delete through a live overlay would delete files inside a
running host.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.testhost import cgroups, lifecycle, network, nspawn, releases, rootfs
from tests.testhost.errors import TesthostError
from tests.testhost.layout import STATE_ROOT, cache_dir, index_of, state_dir, veth_name
from tests.testhost.mounts import lowerdirs_in_use, mounts, mounts_under, unmount_all_under
from tests.testhost.rootfs import remove_interrupted_builds

#: nspawn's per-machine directory on this machine; it cannot remove it itself
#: when /run is not a tmpfs ("Attempted to remove disk file system ...").
NSPAWN_PROPAGATE = Path("/run/systemd/nspawn/propagate")


def leftovers(name: str) -> list[str]:
    """What still exists of host `name` (empty list = nothing)."""
    found: list[str] = []
    found += [f"nspawn pid {pid}" for pid, n in nspawn.harness_processes().items() if n == name]
    found += [f"mount {m.mount_point}" for m in mounts_under(state_dir(name))]
    if network.link_exists(veth_name(name)):
        found.append(f"link {veth_name(name)}")
    found += [f"cgroup {p}" for p in cgroups.paths_for(name) if p.exists()]
    if state_dir(name).exists():
        found.append(f"state dir {state_dir(name)}")
    return found


def teardown(
    name: str,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 10,
    graceful: bool = True,
) -> None:
    """Stop and remove host `name`; raise TesthostError if something cannot be removed.

    Runs with SIGINT/SIGTERM deferred: interrupted halfway it would leave mounts,
    cgroups and the state dir behind.
    """
    with lifecycle.uninterrupted():
        _teardown(name, proc, timeout, graceful)


def _teardown(name: str, proc: subprocess.Popen[bytes] | None, timeout: float, graceful: bool) -> None:
    pids = [pid for pid, n in nspawn.harness_processes().items() if n == name]
    if proc is not None and proc.poll() is None and proc.pid not in pids:
        pids.append(proc.pid)
    nspawn.terminate(pids, proc, timeout=timeout, graceful=graceful)
    cgroup_paths = cgroups.paths_for(name)
    cgroups.kill_all(cgroup_paths)
    state = state_dir(name)
    unmount_all_under(state)
    network.delete_link(veth_name(name))
    cgroups.remove(cgroup_paths)
    remove_tree(state)
    remove_tree(NSPAWN_PROPAGATE / name)


def remove_tree(path: Path) -> None:
    """rm -rf, refusing when anything is mounted at or below path."""
    if not path.exists():
        return
    if mounts_under(path):
        raise TesthostError(f"refusing to delete {path}: something is still mounted below it")
    shutil.rmtree(path)


def candidate_names() -> set[str]:
    """Names of hosts of which anything exists on this machine."""
    names: set[str] = set(nspawn.harness_processes().values())
    if STATE_ROOT.is_dir():
        names.update(p.name for p in STATE_ROOT.iterdir() if p.is_dir())
    for m in mounts():
        if STATE_ROOT in m.mount_point.parents:
            names.add(m.mount_point.relative_to(STATE_ROOT).parts[0])
    for parent in cgroups.parents():
        if parent.is_dir():
            names.update(p.name for p in parent.iterdir() if p.is_dir())
    net = Path("/sys/class/net")
    names.update(link.name[3:] for link in net.iterdir() if link.name.startswith("ve-"))
    return {n for n in names if index_of(n) is not None}


def cleanup(*, force: bool = False) -> list[str]:
    """Remove leftovers of crashed runs; return a line per host handled.

    A host whose index lease is still held belongs to a live process (a running
    test session or `boot --keep`) and is skipped unless force=True.
    """
    report: list[str] = []
    for name in sorted(candidate_names(), key=lambda n: index_of(n) or 0):
        index = index_of(name)
        assert index is not None
        lease = network.try_lease(index)
        if lease is None and not force:
            report.append(f"{name}: in use by a running process, skipped (use --force)")
            continue
        try:
            found = leftovers(name)
            teardown(name)
            report.append(f"{name}: removed {', '.join(found) or 'nothing'}")
        finally:
            if lease is not None:
                lease.release()
    cgroups.remove_parents_if_empty()
    report += [f"removed interrupted rootfs build {p}" for p in remove_interrupted_builds()]
    return report


def remove_outdated_rootfs() -> list[Path]:
    """Cache entries of other recipes (of any release) that no running host boots from any more.

    A build removes the outdated entries itself, except those in use at that moment
    (a recipe changed while another session's hosts ran): nothing else would ever
    remove those. Only for the command line's `cleanup`, not cleanup(): tests call
    that, and a checkout with another recipe sharing the cache would lose its entry
    on every test run. (Here, not in rootfs.py: its source is part of the recipe hash.)
    """
    current = {releases.cache_entry(release) for release in releases.names()}
    if not cache_dir().is_dir():
        return []
    removed: list[Path] = []
    with rootfs._locked(cache_dir() / ".build.lock", wait=False) as locked:
        if not locked:
            return []  # a build is running; it cleans up after itself
        in_use = lowerdirs_in_use()
        for entry in sorted([*cache_dir().glob("rootfs-*"), *cache_dir().glob(".trash-rootfs-*")]):
            if entry not in current and entry.is_dir() and entry / "rootfs" not in in_use:
                shutil.rmtree(entry)
                removed.append(entry)
    return removed
