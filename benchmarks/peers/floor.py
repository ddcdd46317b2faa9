"""The floor: what any paramiko-based tool pays for one remote command, in a fresh process.

    python benchmarks/peers/floor.py HOST PORT USER KEY KNOWN_HOSTS

Python start-up + `import paramiko` + TCP connect (TCP_NODELAY, as ours) + key exchange +
host key checked against known_hosts + public key auth + one exec channel running `true`.
Run as a script, not a module, so nothing of this repository is imported on the way.
"""

from __future__ import annotations

import socket
import sys

import paramiko


def main(argv: list[str]) -> int:
    host, port, user, key, known_hosts = argv[0], int(argv[1]), argv[2], argv[3], argv[4]
    sock = socket.create_connection((host, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = paramiko.SSHClient()
    client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        host,
        port=port,
        username=user,
        pkey=paramiko.Ed25519Key.from_private_key_file(key),
        sock=sock,
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
    )
    try:
        _stdin, stdout, _stderr = client.exec_command("true")
        return stdout.channel.recv_exit_status()
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
