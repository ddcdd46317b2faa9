"""Runs the host agent over SSH with paramiko: one exec channel per request, one connection.

The agent's source travels on stdin of `python3 -c <bootstrap>`, so nothing is installed on
the host and every request is a single round trip. Host keys are checked against known_hosts
like ssh does; an unknown or changed key is refused unless asked otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import threading
from pathlib import Path
from typing import Any

from reconciler.errors import AuthError, HostKeyError, TargetError
from reconciler.executors import known_hosts
from reconciler.executors.base import Event, OnEvent, Payload
from reconciler.executors.bootstrap import (
    ResidentAgent,
    ResidentSlot,
    agent_blob,
    attached_command,
    bootstrap_command,
    no_answer,
    read_events,
)
from reconciler.executors.lean_paramiko import paramiko
from reconciler.executors.ssh_options import SSHOptions
from reconciler.spec.model import Target

CONNECT_TIMEOUT = 10.0


class _HostKeyCheck(paramiko.MissingHostKeyPolicy):
    """Every host key is judged here, by our own known_hosts reader (known_hosts.py): paramiko
    is given no host keys, so it asks this policy about each one. paramiko's reader stops at
    the first `@revoked` or `@cert-authority` line, and its save rewrites the whole file."""

    def __init__(
        self, name: str, files: list[str], entries: list[known_hosts.Entry], accept_new: bool
    ) -> None:
        self.name = name
        self.files = files
        self.entries = entries
        self.accept_new = accept_new

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        blob = key.asbytes()
        verdict = known_hosts.check(self.entries, self.name, blob)
        if verdict.status == known_hosts.NEW and self.accept_new and not verdict.authorities and self.files:
            path = self.files[0]
            others = [e for e in self.entries if e.path != path]
            try:
                verdict = known_hosts.append(path, self.name, key.get_name(), blob, others)
            except OSError as exc:
                raise HostKeyError(
                    f"cannot remember the host key of {self.name} in {path}: {exc.strerror or exc}",
                    hint=f"make the file writable, or add the key yourself: {_keyscan(self.name)} >> {path}",
                ) from None
            if verdict.status == known_hosts.NEW:
                return  # appended: trusted on first use
        if verdict.status != known_hosts.OK:
            raise _refusal(verdict, self.name, key, self.files[0] if self.files else "~/.ssh/known_hosts")


def _keyscan(name: str) -> str:
    """The ssh-keyscan command line that fetches the key of `name` (host or [host]:port)."""
    host, _, port = name.lstrip("[").partition("]:")
    return f"ssh-keyscan -H -p {port} {host}" if port else f"ssh-keyscan -H {host}"


def _refusal(verdict: known_hosts.Verdict, name: str, key: paramiko.PKey, path: str) -> HostKeyError:
    offered = f"{key.get_name()} {key.fingerprint}"
    if verdict.status == known_hosts.REVOKED_KEY and verdict.entry is not None:
        return HostKeyError(
            f"host key of {name} ({offered}) is REVOKED by {verdict.entry.where}",
            hint="do not connect: a revoked key may be stolen. If the host has a new key, "
            "verify it and put it in known_hosts",
        )
    openssh = ""
    if verdict.authorities:
        ca = verdict.authorities[0]
        openssh = (
            f"; {ca.where} trusts host certificates signed by a CA for it, which the built-in "
            "SSH client cannot check: run with --ssh openssh"
        )
    if verdict.status == known_hosts.CHANGED and verdict.entry is not None:
        known = verdict.entry
        return HostKeyError(
            f"host key of {name} CHANGED: {known.where} has {known.key_type} {known.fingerprint}, "
            f"the host offers {offered}",
            hint="if the host was reinstalled on purpose, remove the old key with "
            f"`ssh-keygen -R {shlex.quote(name)}` and verify the new one; otherwise do not connect" + openssh,
        )
    if verdict.authorities:
        return HostKeyError(
            f"host key of {name} ({offered}) is not in known_hosts, and "
            f"{verdict.authorities[0].where} trusts host certificates signed by a CA for it, "
            "which the built-in SSH client cannot check",
            hint="run with --ssh openssh (the system ssh client verifies host certificates), "
            f"or add the host's own key: {_keyscan(name)} >> {path}",
        )
    return HostKeyError(
        f"host key of {name} is unknown ({offered})",
        hint=f"verify it, then add it: {_keyscan(name)} >> {path}, "
        "or pass --accept-new-host-key to trust it on first use",
    )


def _preferring(types: list[str]) -> Any:
    """A transport factory that asks the host for a key of a type known_hosts has for it
    first, as OpenSSH orders HostKeyAlgorithms; otherwise a host with several keys may offer
    one we do not know and look CHANGED."""

    def factory(sock: socket.socket, **kwargs: Any) -> paramiko.Transport:
        transport = paramiko.Transport(sock, **kwargs)
        if types:
            options = transport.get_security_options()
            order = list(options.key_types)
            # known_hosts says ssh-rsa for RSA keys, which are signed with rsa-sha2-*.
            first = [t for t in order if ("ssh-rsa" if t.startswith("rsa-sha2-") else t) in types]
            options.key_types = [*first, *(t for t in order if t not in first)]
        return transport

    return factory


class SSHExecutor:
    def __init__(self, target: Target, options: SSHOptions | None = None) -> None:
        self.target = target
        self.options = options or SSHOptions()
        self.description = str(target)
        self._client: paramiko.SSHClient | None = None
        self._active: paramiko.Channel | None = None
        self._resident = ResidentSlot(self._start_resident, target.host)

    # -- connection ------------------------------------------------------------------------

    def _resolve(self) -> tuple[str, int, str, list[str], list[str]]:
        """host, port, user, identity files, known_hosts files: ~/.ssh/config applies."""
        cfg_path = Path(self.options.config_file or Path.home() / ".ssh" / "config")
        conf: dict[str, Any] = {}
        if cfg_path.exists():
            conf = dict(paramiko.SSHConfig.from_path(str(cfg_path)).lookup(self.target.host))
        host = str(conf.get("hostname", self.target.host))
        port = int(self.target.port or conf.get("port", 22))
        user = str(self.target.user or conf.get("user") or os.environ.get("USER") or "root")
        idents = [*self.options.identity, *[os.path.expanduser(p) for p in conf.get("identityfile", [])]]
        known = [self.options.known_hosts] if self.options.known_hosts else []
        if not known:
            known = [
                os.path.expanduser(p)
                for p in str(conf.get("userknownhostsfile", "~/.ssh/known_hosts")).split()
            ]
        return host, port, user, idents, known

    def connect(self) -> paramiko.SSHClient:
        if self._client is not None and self._client.get_transport() is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._client
        host, port, user, idents, known = self._resolve()
        name = known_hosts.lookup_name(host, port)
        try:
            entries = known_hosts.load(known)
        except OSError as exc:
            raise HostKeyError(
                f"cannot read known_hosts {exc.filename}: {exc.strerror or exc}",
                hint="make it readable by the user running reconcile, or point --known-hosts elsewhere",
            ) from None
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(
            _HostKeyCheck(name, known, entries, self.options.accept_new_host_key)
        )
        try:
            sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            raise TargetError(
                f"cannot reach {host}:{port}: {exc.strerror or exc}",
                hint="check the address in `target`, that sshd runs there, and any firewall in between",
            ) from None
        # Nagle plus delayed ACKs add ~40 ms to every small exchange; requests are small.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            client.connect(
                host,
                port=port,
                username=user,
                sock=sock,
                key_filename=[p for p in idents if os.path.exists(p)] or None,  # type: ignore[arg-type]
                allow_agent=True,
                look_for_keys=not idents,
                timeout=CONNECT_TIMEOUT,
                banner_timeout=CONNECT_TIMEOUT,
                auth_timeout=CONNECT_TIMEOUT,
                transport_factory=_preferring(known_hosts.key_types(entries, name)),
            )
        except HostKeyError:
            sock.close()
            raise
        except paramiko.AuthenticationException as exc:
            sock.close()
            raise AuthError(
                f"{user}@{host}:{port} refused authentication ({exc})",
                hint="check the user in `target`, pass a key with -i, or load it into ssh-agent",
            ) from None
        except (paramiko.SSHException, OSError) as exc:
            sock.close()
            if "No existing session" in str(exc):  # the server hung up while we offered keys
                raise AuthError(
                    f"{user}@{host}:{port} closed the connection during authentication",
                    hint="it may allow only a few keys per connection (sshd MaxAuthTries) and none "
                    "offered so far was accepted: pass the right key with -i, or give the host "
                    "its own IdentityFile in ~/.ssh/config",
                ) from None
            raise TargetError(f"SSH to {host}:{port} failed: {exc}") from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        self._client = client
        return client

    # -- requests --------------------------------------------------------------------------

    def request(
        self,
        request: dict[str, Any],
        *,
        payload: Payload | None = None,
        on_event: OnEvent | None = None,
    ) -> Event:
        if self.options.resident and payload is None:
            return self._resident.request(request, on_event)
        chan = self._channel()
        self._active = chan
        try:
            chan.exec_command(bootstrap_command(self.options.python, self.options.sudo))
            body = dict(request, payload_size=payload.size if payload else 0)
            chan.sendall(agent_blob() + json.dumps(body).encode() + b"\n")
            sender = None
            if payload is not None:
                sender = threading.Thread(target=_send_payload, args=(chan, payload), daemon=True)
                sender.start()
            final = self._read_events(chan, on_event)
            if sender is not None:
                sender.join(timeout=5)
            return final
        finally:
            self._active = None
            chan.close()

    def attach(self, request: dict[str, Any]) -> int:
        from reconciler.executors.terminal import pump, terminal_size

        chan = self._channel()
        if request["tty"]:
            columns, rows = terminal_size()
            chan.get_pty(term=os.environ.get("TERM") or "xterm", width=columns, height=rows)
        chan.exec_command(attached_command(self.options.python, self.options.sudo, request))
        return pump(chan, tty=request["tty"], interactive=request["interactive"])

    def _channel(self) -> paramiko.Channel:
        client = self.connect()
        transport = client.get_transport()
        if transport is None:  # pragma: no cover - connect() guarantees one
            raise TargetError("SSH connection lost")
        try:
            return transport.open_session(timeout=CONNECT_TIMEOUT)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()  # the next request reconnects
            raise TargetError(
                f"{self.target.host} refused a new SSH session ({exc})",
                hint="sshd may be at its MaxSessions limit or shutting down; run again",
            ) from None

    def _start_resident(self) -> ResidentAgent:
        chan = self._channel()
        chan.exec_command(bootstrap_command(self.options.python, self.options.sudo, resident=True))
        chan.sendall(agent_blob())
        return ResidentAgent(chan.sendall, iter(chan.makefile("rb")), chan.close)

    def _read_events(self, chan: paramiko.Channel, on_event: OnEvent | None) -> Event:
        stdout = chan.makefile("rb")
        final = read_events(stdout, on_event)
        if final is not None:
            return final
        status = chan.recv_exit_status() if chan.exit_status_ready() or not chan.closed else -1
        err = b""
        with contextlib.suppress(OSError, socket.timeout):
            chan.settimeout(2)
            err = chan.makefile_stderr("rb").read()
        raise no_answer(self.target.host, self.options.python, status, err.decode("utf-8", "replace"))

    def cancel(self) -> None:
        chan = self._active
        if chan is not None:
            with contextlib.suppress(OSError, EOFError):
                chan.sendall(b"cancel\n")
        self._resident.cancel()

    def close(self) -> None:
        self._resident.close()
        if self._client is not None:
            self._client.close()
            self._client = None


def _send_payload(chan: paramiko.Channel, payload: Payload) -> None:
    with contextlib.suppress(OSError, EOFError), payload.open() as stream:
        while chunk := stream.read(1 << 16):
            chan.sendall(chunk)
