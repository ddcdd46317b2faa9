"""Disposable real test hosts for integration tests.

A host is a Debian bookworm container booted with systemd-nspawn: real systemd
as PID 1, sshd (key auth only), Caddy and rootful Podman inside, reachable from
this machine at 10.231.<index>.2 over a private veth. tests/testhost/README.md
explains the choices and the pitfalls of this machine kind they work around.

    from tests.testhost import boot

    with boot() as host:
        client = host.connect()               # paramiko, host key verified
        host.exec(["systemctl", "is-active", "caddy"])
        assert host.http("/").status == 200

Needs root, `apt-get install systemd-container debootstrap`, and network access
to the Debian mirror and PyPI for the first (cached) rootfs build.
"""

from tests.testhost.errors import TesthostError
from tests.testhost.guestfs import EntryState
from tests.testhost.host import ExecResult, TestHost, boot, boot_many, start, stop_all
from tests.testhost.httpget import HttpResponse
from tests.testhost.releases import ensure_rootfs
from tests.testhost.teardown import cleanup, leftovers

__all__ = [
    "EntryState",
    "ExecResult",
    "HttpResponse",
    "TestHost",
    "TesthostError",
    "boot",
    "boot_many",
    "cleanup",
    "ensure_rootfs",
    "leftovers",
    "start",
    "stop_all",
]
