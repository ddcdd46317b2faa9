"""Where the harness keeps things and how it names them.

Everything the harness creates on this machine is identifiable from these names
alone, which is what lets `cleanup` remove leftovers of crashed runs without
touching anything it did not make.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Prefix of every host name ("rth3"). Short on purpose: nspawn names the
#: machine-side veth "ve-" + name and Linux limits link names to 15 characters.
NAME_PREFIX = "rth"

#: Subnets are 10.231.<index>.0/24; index 0 and 255 are never handed out.
SUBNET_PREFIX = "10.231"
MIN_INDEX = 1
MAX_INDEX = 254

#: Default rootfs cache. Outside the repository on purpose: CI clones afresh for
#: every run, so a cache inside the clone would always be cold.
DEFAULT_CACHE_DIR = Path("/var/cache/reconciler-testhost")
CACHE_ENV = "RECONCILER_TESTHOST_CACHE"

#: Per-boot state (overlay dirs, keys, logs, share dir) and index lock files.
STATE_ROOT = Path("/run/reconciler-testhost")

#: Name of the per-host cgroup parent created in each cgroup hierarchy.
CGROUP_PARENT = "reconciler-testhost"

#: Root of the repository, bind-mounted read-only at /src inside every host.
REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """The rootfs cache directory (env override first)."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else DEFAULT_CACHE_DIR


def host_name(index: int) -> str:
    return f"{NAME_PREFIX}{index}"


def index_of(name: str) -> int | None:
    """Inverse of host_name(); None for names the harness did not make."""
    if not name.startswith(NAME_PREFIX):
        return None
    digits = name[len(NAME_PREFIX) :]
    if not digits.isdigit() or digits != str(int(digits)):
        return None
    index = int(digits)
    return index if MIN_INDEX <= index <= MAX_INDEX else None


def veth_name(name: str) -> str:
    """Machine-side link nspawn creates for --network-veth."""
    return f"ve-{name}"


def state_dir(name: str) -> Path:
    return STATE_ROOT / name


def lock_dir() -> Path:
    return STATE_ROOT / "locks"
