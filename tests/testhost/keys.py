"""Per-boot SSH keys: the client key that root accepts and the host's own key."""

from __future__ import annotations

from pathlib import Path

from tests.testhost.commands import run


def generate_ed25519(path: Path, comment: str) -> str:
    """Create an unencrypted ed25519 key pair at path (0600); return the public line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + ".pub")):
        stale.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path], timeout=30)
    path.chmod(0o600)
    return path.with_name(path.name + ".pub").read_text().strip()


def known_hosts_line(address: str, port: int, public_line: str) -> str:
    """A known_hosts entry; OpenSSH and paramiko use [host]:port only for ports other than 22."""
    host = address if port == 22 else f"[{address}]:{port}"
    key_type, key_data = public_line.split()[:2]
    return f"{host} {key_type} {key_data}\n"
