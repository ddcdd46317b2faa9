"""No-op time of `reconcile --once` for fleets of 1, 4 and 8 real test hosts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.testhost import TestHost


def one_deploy_key(hosts: list[TestHost]) -> None:
    """Like a real fleet, every host accepts one deploy key (the first host's); offering one
    key per host would run into sshd's MaxAuthTries (6) on a fleet of 8."""
    public = Path(f"{hosts[0].key_path}.pub").read_bytes()
    for host in hosts[1:]:
        keys = host.read("/root/.ssh/authorized_keys") or b""
        host.write("/root/.ssh/authorized_keys", keys + public, 0o600)
