"""SSH settings, kept apart from the SSH executor so choosing one never imports paramiko."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SSHOptions:
    identity: tuple[str, ...] = ()  # -i files, tried before ~/.ssh/config's IdentityFile
    known_hosts: str | None = None  # default: the ssh config's UserKnownHostsFile, ~/.ssh/known_hosts
    accept_new_host_key: bool = False  # like StrictHostKeyChecking=accept-new
    config_file: str | None = None  # default ~/.ssh/config
    sudo: bool | None = None  # None: the host decides, `sudo -n` unless the login is root
    python: str = "python3"
    transport: str = "paramiko"  # or "openssh": the system's ssh client, with a master connection
    # Keep one agent running on the connection and send it request after request (watch mode,
    # whose passes then cost a round trip instead of a python3 start and a compile).
    resident: bool = False
