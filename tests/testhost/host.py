"""One test host: boot it, talk to it, stop it.

A host is a systemd-nspawn container with systemd as PID 1, booted from a fresh
overlayfs over the cached rootfs, with a private /24 on a veth pair. Everything
that belongs to it on this machine lives in its state dir
/run/reconciler-testhost/<name>/ and its cgroups; teardown.py removes all of it.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko

from tests.testhost import (
    cgroups,
    guestfs,
    httpget,
    keys,
    lifecycle,
    network,
    nsexec,
    nspawn,
    preflight,
)
from tests.testhost.commands import tail_file
from tests.testhost.errors import TesthostError
from tests.testhost.guestfs import EntryState
from tests.testhost.layout import REPO_ROOT, host_name, state_dir, veth_name
from tests.testhost.mounts import mount_overlay
from tests.testhost.releases import ensure_rootfs, release_of
from tests.testhost.rootfs import DEFAULT_RELEASE
from tests.testhost.teardown import leftovers, teardown

#: Environment of commands run by exec(): the host's own defaults, nothing from
#: this machine (its PATH points at pyenv shims that do not exist in the host).
EXEC_ENV: dict[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "USER": "root",
    "LOGNAME": "root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
}

#: States `systemctl is-system-running --wait` can end in while booting is not
#: finished yet, or before systemd's bus socket exists at all ("offline", "").
_NOT_YET = {"", "offline", "initializing", "starting", "unknown"}


class _BootError(TesthostError):
    """A boot failure whose message already carries the nspawn log tail."""


@dataclass(frozen=True)
class ExecResult:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


class TestHost:
    """A booted host. Create with boot() / boot_many(); stop() is idempotent."""

    __test__ = False  # not a pytest test class, despite the name

    ssh_user = "root"
    ssh_port = 22

    def __init__(self, lease: network.IndexLease, rootfs: Path, release: str = DEFAULT_RELEASE) -> None:
        self._lease = lease
        #: The release booted ("bookworm", "bullseye", "docker", "jammy").
        self.release = release
        #: bookworm: the venv with the project's runtime deps; bullseye, jammy: /usr/bin/python3.
        self.python = release_of(release).python
        self.index = lease.index
        self.name = host_name(lease.index)
        self.address = network.address(lease.index)
        self.gateway = network.gateway(lease.index)
        self.rootfs = rootfs
        self.state_dir = state_dir(self.name)
        self.merged = self.state_dir / "merged"
        self.share = self.state_dir / "share"
        #: /var/lib/containers inside (Podman's images and containers; on a docker host
        #: /var/lib/docker); removed with the state dir.
        self.container_storage = self.state_dir / "containers"
        self.key_path = self.state_dir / "ssh" / "id_ed25519"
        self.known_hosts = self.state_dir / "ssh" / "known_hosts"
        self.log_path = self.state_dir / "nspawn.log"
        self.ssh_target = f"ssh://{self.ssh_user}@{self.address}:{self.ssh_port}"
        self.veth = veth_name(self.name)
        self.cgroups = cgroups.paths_for(self.name)
        self.leader: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopped = False
        self._booted = False
        # exec() processes in flight, so stop() from another thread (or a signal
        # handler) can end them instead of leaving them blocked until timeout.
        self._execs: set[subprocess.Popen[bytes]] = set()
        self._execs_lock = threading.Lock()
        self._stop_lock = threading.RLock()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"leader={self.leader}"
        return f"<TestHost {self.name} {self.release} {self.address} {state}>"

    # ----------------------------------------------------------------- boot

    def _boot(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        try:
            # Our lease is fresh, so anything left under this name is from a crashed run.
            if leftovers(self.name):
                teardown(self.name)
            self._prepare()
            self._check_not_stopped()
            self._launch(deadline)
            self._check_not_stopped()
            self._wait_ready(deadline)
            self._booted = True
        except TesthostError as exc:
            if isinstance(exc, _BootError):
                raise
            # Read the log now: stop() deletes it together with the state dir.
            raise self._boot_error(str(exc)) from exc

    def _check_not_stopped(self) -> None:
        if self._stopped:
            raise TesthostError(f"{self.name} was stopped while booting")

    def _prepare(self) -> None:
        """State dir, overlay, and the per-boot files written before systemd starts."""
        self.state_dir.mkdir(parents=True, mode=0o700)
        self.share.mkdir()
        self.container_storage.mkdir(mode=0o700)
        mount_overlay(self.rootfs, self.state_dir / "upper", self.state_dir / "work", self.merged)
        client_pub = keys.generate_ed25519(self.key_path, f"reconciler-testhost@{self.name}")
        host_key = self.state_dir / "ssh" / "ssh_host_ed25519_key"
        host_pub = keys.generate_ed25519(host_key, f"root@{self.name}")
        self.known_hosts.write_text(keys.known_hosts_line(self.address, self.ssh_port, host_pub))

        root = self.merged
        guestfs.write(root, "/etc/ssh/ssh_host_ed25519_key", host_key.read_bytes(), 0o600)
        guestfs.write(root, "/etc/ssh/ssh_host_ed25519_key.pub", (host_pub + "\n").encode(), 0o644)
        guestfs.write(root, "/root/.ssh/authorized_keys", (client_pub + "\n").encode(), 0o600)
        guestfs.write(root, "/etc/hostname", f"{self.name}\n".encode())
        hosts = guestfs.read(root, "/etc/hosts") or b""
        guestfs.write(root, "/etc/hosts", hosts + f"127.0.1.1\t{self.name}\n".encode())
        # Same file name as systemd's default for nspawn's host0 (DHCP), so this
        # one replaces it. No Gateway: the host must have no route off the veth.
        guestfs.write(
            root,
            "/etc/systemd/network/80-container-host0.network",
            (
                "[Match]\nVirtualization=container\nName=host0\n\n"
                f"[Network]\nAddress={self.address}/24\n"
                "DHCP=no\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
            ).encode(),
        )

    def _launch(self, deadline: float) -> None:
        paths = cgroups.create(self.name)
        docker = release_of(self.release).docker
        command = nspawn.argv(
            self.name, self.merged, self.share, REPO_ROOT, self.container_storage, docker=docker
        )
        self._proc = nspawn.start(command, paths, self.log_path, docker=docker)
        alive = self._nspawn_alive
        network.wait_for_link(self.veth, timeout=self._left(deadline), alive=alive)
        network.configure_machine_side(self.veth, self.gateway)
        self.leader = nspawn.find_leader(self._proc.pid, timeout=self._left(deadline), alive=alive)

    def _nspawn_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @staticmethod
    def _left(deadline: float) -> float:
        return max(0.1, deadline - time.monotonic())

    def _wait_ready(self, deadline: float) -> None:
        """systemd finished booting (running, not degraded), then sshd answers."""
        while True:
            if not self._nspawn_alive():
                raise self._boot_error("systemd-nspawn exited during boot")
            result = self.exec(
                ["systemctl", "is-system-running", "--wait"],
                check=False,
                timeout=self._left(deadline),
            )
            state = result.stdout.strip()
            if state == "running":
                break
            if state not in _NOT_YET:
                failed = self.exec(["systemctl", "--failed", "--no-legend"], check=False).stdout
                raise self._boot_error(f"system state is {state!r}; failed units:\n{failed}")
            if time.monotonic() > deadline:
                raise self._boot_error(f"system still {state!r} at the boot deadline")
            time.sleep(0.02)
        while not self._ssh_banner():
            self._check_not_stopped()
            if not self._nspawn_alive():
                raise self._boot_error("systemd-nspawn exited during boot")
            if time.monotonic() > deadline:
                raise self._boot_error(f"sshd does not answer on {self.address}:{self.ssh_port}")
            time.sleep(0.02)

    def _ssh_banner(self) -> bool:
        try:
            with socket.create_connection((self.address, self.ssh_port), timeout=1) as sock:
                return sock.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def _boot_error(self, message: str) -> TesthostError:
        return _BootError(
            f"{self.name} failed to boot: {message}\n"
            f"--- tail of {self.log_path} ---\n{tail_file(self.log_path)}"
        )

    # ----------------------------------------------------------------- use

    def _require_running(self) -> int:
        if self._stopped or self.leader is None:
            raise TesthostError(f"{self.name} is not running")
        return self.leader

    @property
    def root(self) -> Path:
        """The host's / as seen from this machine, including its own mounts."""
        return Path(f"/proc/{self._require_running()}/root")

    def exec(
        self,
        cmd: str | list[str],
        *,
        timeout: float = 60,
        check: bool = True,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        """Run a command inside the host via nsenter into all namespaces of its PID 1.

        A string runs through /bin/sh -c. Not over SSH: this works before sshd is
        up and does not depend on the code under test.
        """
        leader = self._require_running()
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        proc = nsexec.start(leader, argv, {**EXEC_ENV, **(env or {})}, with_input=input is not None)
        with self._execs_lock:
            self._execs.add(proc)
        try:
            out, err = nsexec.communicate(proc, input, timeout)
        except subprocess.TimeoutExpired as exc:
            raise TesthostError(f"{self.name}: timed out after {timeout:g}s: {argv}") from exc
        finally:
            with self._execs_lock:
                self._execs.discard(proc)
        result = ExecResult(argv, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and result.rc != 0:
            raise TesthostError(
                f"{self.name}: command failed (rc={result.rc}): {argv}\n"
                f"--- stdout ---\n{result.stdout}--- stderr ---\n{result.stderr}"
            )
        return result

    def read(self, path: str) -> bytes | None:
        """Contents of a file inside the host, or None if it does not exist."""
        return guestfs.read(self.root, path)

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write a file inside the host (root-owned), creating parent directories."""
        guestfs.write(self.root, path, data, mode)

    def tree_state(self, paths: list[str]) -> dict[str, EntryState]:
        """(type, mode, sha256 or link target) for everything under paths, for
        byte-for-byte "unchanged" assertions. Missing paths are absent."""
        return guestfs.tree_state(self.root, paths)

    def connect(self, *, timeout: float = 10) -> paramiko.SSHClient:
        """An SSH client logged in as root with the per-boot key, host key verified.

        TCP_NODELAY is set before the handshake: without it every exec round trip
        pays ~50 ms of Nagle + delayed ACK.
        """
        self._require_running()
        sock = socket.create_connection((self.address, self.ssh_port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                self.address,
                port=self.ssh_port,
                username=self.ssh_user,
                pkey=paramiko.Ed25519Key.from_private_key_file(str(self.key_path)),
                sock=sock,
                allow_agent=False,
                look_for_keys=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
            )
        except BaseException:
            client.close()
            sock.close()
            raise
        return client

    def ssh_command(self) -> list[str]:
        """An OpenSSH command line that reaches the host as root with strict checking."""
        return [
            "ssh",
            "-i", str(self.key_path),
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-p", str(self.ssh_port),
            f"{self.ssh_user}@{self.address}",
        ]  # fmt: skip

    def http(
        self,
        path: str = "/",
        *,
        port: int = 80,
        timeout: float = 5,
        headers: Mapping[str, str] | None = None,
    ) -> httpget.HttpResponse:
        """GET http://<address>:<port><path> from this machine over the veth."""
        return httpget.get(self.address, path, port=port, timeout=timeout, headers=headers)

    def wait_http(
        self, path: str = "/", *, port: int = 80, status: int = 200, timeout: float = 10
    ) -> httpget.HttpResponse:
        """Poll until GET path returns `status`; TesthostError after timeout."""
        return httpget.wait_for(self.address, path, port=port, status=status, timeout=timeout)

    # ----------------------------------------------------------------- reboot

    def reboot(self, *, timeout: float = 60) -> float:
        """`systemctl reboot` inside the host, and boot it again from the same disk.

        The container's systemd shuts everything down in order and nspawn exits with 133
        (its "reboot" status); the host is then started again on the same overlay, so what a
        real reboot keeps is kept (every file on disk) and what it loses is lost (/run, every
        process, what Caddy had loaded). Returns the seconds until sshd answered again.
        While it runs, exec() and read() fail: the host is not running.
        """
        with self._stop_lock:
            self._require_running()
            started = time.monotonic()
            deadline = started + timeout
            self.exec(["systemctl", "reboot"], check=False, timeout=timeout)
            assert self._proc is not None
            try:
                status = self._proc.wait(self._left(deadline))
            except subprocess.TimeoutExpired as exc:
                raise self._boot_error("did not shut down for its reboot in time") from exc
            self.leader = None
            if status != nspawn.REBOOT_STATUS:
                raise self._boot_error(f"systemd-nspawn exited with {status} on reboot, not 133")
            self._launch(deadline)
            self._wait_ready(deadline)
            return time.monotonic() - started

    # ----------------------------------------------------------------- stop

    @property
    def stopped(self) -> bool:
        return self._stopped

    def begin_stop(self) -> None:
        """Ask nspawn to halt the container without waiting (used to stop many at once)."""
        if not self._stopped and self._nspawn_alive():
            assert self._proc is not None
            nspawn.send(self._proc.pid, signal.SIGTERM)

    def stop(self) -> None:
        """Halt the host and remove every trace of it. Idempotent."""
        with self._stop_lock, lifecycle.uninterrupted():
            if self._stopped:
                return
            self._stopped = True
            with self._execs_lock:
                in_flight = list(self._execs)
            for proc in in_flight:
                nspawn.kill_tree(proc.pid)
            try:
                # A host still booting gets no orderly halt: its systemd may not
                # handle the halt signal yet (see nspawn.terminate).
                teardown(self.name, proc=self._proc, graceful=self._booted)
            finally:
                self.leader = None
                self._lease.release()
                lifecycle.unregister(self)
                cgroups.remove_parents_if_empty()


def start(index: int | None = None, *, timeout: float = 60, release: str = DEFAULT_RELEASE) -> TestHost:
    """Boot a host and return it running; the caller must stop() it (boot() does)."""
    preflight.check()
    rootfs = ensure_rootfs(release)
    host = TestHost(network.lease(index), rootfs, release)
    lifecycle.register(host)
    try:
        host._boot(timeout)
    except BaseException:
        host.stop()
        raise
    return host


@contextmanager
def boot(
    index: int | None = None, *, timeout: float = 60, release: str = DEFAULT_RELEASE
) -> Iterator[TestHost]:
    """Boot one host (of `release`: "bookworm", "bullseye", "docker", "jammy") for the duration of a
    with-block; it is always torn down."""
    host = start(index, timeout=timeout, release=release)
    try:
        yield host
    finally:
        host.stop()


@contextmanager
def boot_many(count: int, *, timeout: float = 60, release: str = DEFAULT_RELEASE) -> Iterator[list[TestHost]]:
    """Boot `count` hosts concurrently (distinct subnets); stop them all on exit."""
    ensure_rootfs(release)  # once, not raced by every thread
    lifecycle.hold()  # handlers installed from this (main) thread before workers start
    hosts: list[TestHost] = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, count)) as pool:
            futures = [pool.submit(start, None, timeout=timeout, release=release) for _ in range(count)]
            errors: list[BaseException] = []
            for future in futures:
                try:
                    hosts.append(future.result())
                except BaseException as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]
        yield hosts
    finally:
        try:
            lifecycle.stop_many(list(hosts))
        finally:
            lifecycle.release()


def stop_all() -> None:
    """Stop every host this process booted."""
    lifecycle.stop_all()
