"""Checks that this machine can run test hosts, with the exact fix in the message."""

from __future__ import annotations

import os
import shutil

from tests.testhost.errors import TesthostError

#: Tools the harness calls, and the Debian package that provides each.
BOOT_TOOLS: dict[str, str] = {
    "systemd-nspawn": "systemd-container",
    "nsenter": "util-linux",
    "mount": "mount",
    "umount": "mount",
    "ip": "iproute2",
    "ssh-keygen": "openssh-client",
}
BUILD_TOOLS: dict[str, str] = {
    "debootstrap": "debootstrap",
    "chroot": "coreutils",
}
INSTALL_HINT = "apt-get install systemd-container debootstrap"


def check(*, build: bool = False) -> None:
    """Raise TesthostError unless we are root and every needed tool is installed.

    Both tool sets are checked on every call so the message names everything that
    is missing at once (a boot may trigger a build when the cache is stale).
    """
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append(
            "test hosts need root for systemd-nspawn, overlay mounts, veth links and "
            "cgroups: run as root (e.g. `sudo -E python -m pytest ...`)"
        )
    tools = {**BOOT_TOOLS, **BUILD_TOOLS}
    missing = {tool: pkg for tool, pkg in tools.items() if shutil.which(tool) is None}
    if missing:
        packages = sorted(set(missing.values()) | {"systemd-container", "debootstrap"})
        hint = (
            INSTALL_HINT
            if set(packages) <= {"systemd-container", "debootstrap"}
            else ("apt-get install " + " ".join(packages))
        )
        problems.append(f"missing tools: {', '.join(sorted(missing))}; install with `{hint}`")
    if problems:
        stage = "build the test host rootfs" if build else "boot a test host"
        raise TesthostError(f"cannot {stage}: " + "; ".join(problems))
