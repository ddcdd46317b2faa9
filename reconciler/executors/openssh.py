"""Runs the host agent through the system's OpenSSH client: `--ssh openssh`.

Everything the user's ssh_config says applies (ProxyJump, Match, certificates, keys in an
agent or on hardware tokens), and a master connection is kept for a minute (ControlPersist),
so consecutive runs, and the observe and apply requests of one run, share one TCP connection
and one authentication, as Ansible's tuned setup does. Requests are the same single exec as
with paramiko; paramiko is never imported here.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import IO, Any

from reconciler.errors import AuthError, HostKeyError, TargetError
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
from reconciler.executors.ssh_options import SSHOptions
from reconciler.spec.model import Target

CONTROL_DIR = Path(os.environ.get("XDG_RUNTIME_DIR") or Path.home() / ".ssh")


class OpenSSHExecutor:
    def __init__(self, target: Target, options: SSHOptions | None = None) -> None:
        self.target = target
        self.options = options or SSHOptions()
        self.description = str(target)
        self._active: subprocess.Popen[bytes] | None = None
        self._resident = ResidentSlot(self._start_resident, target.host)

    def argv(self, *, resident: bool = False) -> list[str]:
        return self._ssh(bootstrap_command(self.options.python, self.options.sudo, resident=resident))

    def _ssh(self, remote: str, *, tty: bool = False) -> list[str]:
        o = self.options
        CONTROL_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv = [
            "ssh",
            "-tt" if tty else "-T",
            "-o",
            "BatchMode=yes",  # never prompt: a deploy has nobody to answer
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={CONTROL_DIR}/reconciler-%C",
            "-o",
            "ControlPersist=60s",
            "-o",
            "StrictHostKeyChecking=" + ("accept-new" if o.accept_new_host_key else "yes"),
        ]
        if o.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={o.known_hosts}"]
        for key in o.identity:
            argv += ["-i", key]
        if o.config_file:
            argv += ["-F", o.config_file]
        if self.target.port:
            argv += ["-p", str(self.target.port)]
        if self.target.user:
            argv += ["-l", self.target.user]
        return [*argv, "--", self.target.host, remote]

    def attach(self, request: dict[str, Any]) -> int:
        """ssh itself attaches the terminal (raw mode, window size) or the pipes."""
        remote = attached_command(self.options.python, self.options.sudo, request)
        argv = self._ssh(remote, tty=request["tty"])
        argv[1:1] = ["-o", "LogLevel=ERROR"]  # no "Connection to ... closed." after a terminal
        stdin = None if request["interactive"] else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(argv, stdin=stdin)
        except FileNotFoundError:
            raise TargetError("--ssh openssh needs the ssh client: install openssh-client") from None
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.terminate()  # the host sees the session end and stops the command
            proc.wait(10)
            raise

    def request(
        self,
        request: dict[str, Any],
        *,
        payload: Payload | None = None,
        on_event: OnEvent | None = None,
    ) -> Event:
        if self.options.resident and payload is None:
            return self._resident.request(request, on_event)
        try:
            proc = subprocess.Popen(
                self.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except FileNotFoundError:
            raise TargetError("--ssh openssh needs the ssh client: install openssh-client") from None
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self._active = proc
        errors: list[bytes] = []
        stderr = proc.stderr
        reader = threading.Thread(target=lambda: errors.append(stderr.read()), daemon=True)
        reader.start()
        body = dict(request, payload_size=payload.size if payload else 0)
        sender = threading.Thread(
            target=_send, args=(proc.stdin, json.dumps(body).encode(), payload), daemon=True
        )
        sender.start()
        try:
            final = read_events(proc.stdout, on_event)
            if final is not None:
                return final
            proc.wait(30)
            reader.join(5)
            raise self._failure(proc.returncode, b"".join(errors).decode("utf-8", "replace"))
        finally:
            self._active = None
            with contextlib.suppress(OSError):
                proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

    def _start_resident(self) -> ResidentAgent:
        try:
            proc = subprocess.Popen(
                self.argv(resident=True),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise TargetError("--ssh openssh needs the ssh client: install openssh-client") from None
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None

        def write(data: bytes) -> None:
            stdin.write(data)
            stdin.flush()

        def close() -> None:
            with contextlib.suppress(OSError, ValueError):
                stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)

        write(agent_blob())
        return ResidentAgent(write, iter(stdout), close)

    def _failure(self, code: int, stderr: str) -> Exception:
        text = stderr.strip()
        host = self.target.host
        if "marked as revoked" in text or "REVOKED HOST KEY" in text:
            return HostKeyError(
                f"host key of {host} is REVOKED in known_hosts (ssh: {_revoked_line(text)})",
                hint="do not connect: a revoked key may be stolen. If the host has a new key, "
                "verify it and put it in known_hosts",
            )
        if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            return HostKeyError(
                f"host key of {host} is unknown or CHANGED (ssh: {text.splitlines()[-1]})",
                hint=f"verify it; then add it with ssh-keyscan {host} >> ~/.ssh/known_hosts, "
                "or pass --accept-new-host-key to trust it on first use",
            )
        if "Permission denied" in text or "Too many authentication failures" in text:
            return AuthError(
                f"{host} refused authentication ({text.splitlines()[-1]})",
                hint="check the user in `target`, pass a key with -i, or load it into ssh-agent",
            )
        if code == 255:
            return TargetError(
                f"cannot reach {host} over ssh: {text.splitlines()[-1] if text else 'exit 255'}",
                hint="check the address in `target` and that sshd runs there",
            )
        return no_answer(host, self.options.python, code, text)

    def cancel(self) -> None:
        proc = self._active
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.write(b"cancel\n")
                proc.stdin.flush()
        self._resident.cancel()

    def close(self) -> None:
        # The master connection lingers (ControlPersist) for the next run; that is the point.
        self._resident.close()

    def close_master(self) -> None:
        """End the master connection now; the next request authenticates afresh."""
        argv = ["ssh", "-O", "exit", "-o", f"ControlPath={CONTROL_DIR}/reconciler-%C"]
        if self.target.port:
            argv += ["-p", str(self.target.port)]
        if self.target.user:
            argv += ["-l", self.target.user]
        subprocess.run([*argv, self.target.host], capture_output=True, timeout=30, check=False)


def _revoked_line(text: str) -> str:
    return next((line for line in text.splitlines() if "revoked" in line), text.splitlines()[-1]).strip()


def _send(stdin: IO[bytes], body: bytes, payload: Payload | None) -> None:
    with contextlib.suppress(OSError, ValueError):
        stdin.write(agent_blob() + body + b"\n")
        stdin.flush()
        if payload is not None:
            with payload.open() as stream:
                while chunk := stream.read(1 << 16):
                    stdin.write(chunk)
            stdin.flush()
