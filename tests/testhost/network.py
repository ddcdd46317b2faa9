"""Subnet indexes and the machine side of each host's veth link.

Host <index> owns 10.231.<index>.0/24: the container is .2 on its host0, this
machine is .1 on ve-rth<index>. No gateway is configured inside the container,
so a host can reach this machine's veth address and nothing beyond it.

Indexes are leased with flock() on a lock file per index. A lease is held for the
whole life of a host by the process that booted it, so several hosts in one
process, and several pytest processes at once, never share a subnet; and a
crashed process releases its leases automatically (the kernel drops the lock),
which is how the next boot or `cleanup` can tell leftovers from live hosts.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from tests.testhost.commands import run
from tests.testhost.errors import TesthostError
from tests.testhost.layout import MAX_INDEX, MIN_INDEX, SUBNET_PREFIX, host_name, lock_dir


def address(index: int) -> str:
    """Container side of the veth."""
    return f"{SUBNET_PREFIX}.{index}.2"


def gateway(index: int) -> str:
    """Machine side of the veth."""
    return f"{SUBNET_PREFIX}.{index}.1"


class IndexLease:
    """An exclusive claim on one subnet index; release() (or process exit) frees it."""

    def __init__(self, index: int, fd: int) -> None:
        self.index = index
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def try_lease(index: int) -> IndexLease | None:
    """Lease index if nobody (this process included) holds it, else None."""
    if not MIN_INDEX <= index <= MAX_INDEX:
        raise TesthostError(f"subnet index must be in {MIN_INDEX}..{MAX_INDEX}, not {index}")
    lock_dir().mkdir(parents=True, exist_ok=True)
    # Python opens descriptors non-inheritable (O_CLOEXEC), so nspawn never
    # inherits the lock and cannot keep it alive after this process is gone.
    fd = os.open(lock_dir() / f"{host_name(index)}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return IndexLease(index, fd)


def lease(index: int | None) -> IndexLease:
    """Lease the given index, or the lowest free one when index is None."""
    if index is not None:
        claimed = try_lease(index)
        if claimed is None:
            raise TesthostError(f"subnet index {index} ({host_name(index)}) is in use by a running host")
        return claimed
    for candidate in range(MIN_INDEX, MAX_INDEX + 1):
        claimed = try_lease(candidate)
        if claimed is not None:
            return claimed
    raise TesthostError("all subnet indexes are in use; run `python -m tests.testhost cleanup`")


def link_exists(link: str) -> bool:
    return Path("/sys/class/net", link).exists()


def wait_for_link(link: str, *, timeout: float, alive: Callable[[], bool]) -> None:
    """Wait until nspawn has created the machine side of the veth."""
    deadline = time.monotonic() + timeout
    while not link_exists(link):
        if not alive():
            raise TesthostError(f"systemd-nspawn exited before creating {link}")
        if time.monotonic() > deadline:
            raise TesthostError(f"{link} did not appear within {timeout:g}s")
        time.sleep(0.01)


def configure_machine_side(link: str, gateway_address: str) -> None:
    """Address and bring up ve-NAME; the container's host0 has no carrier until then."""
    run(["ip", "addr", "replace", f"{gateway_address}/24", "dev", link], timeout=10)
    run(["ip", "link", "set", link, "up"], timeout=10)


def delete_link(link: str) -> None:
    """Remove a veth that outlived its container (normally it dies with the netns)."""
    if link_exists(link):
        run(["ip", "link", "delete", link], check=False, timeout=10)
