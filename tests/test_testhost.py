"""The test host harness itself, against real hosts (no mocks).

Needs root and `apt-get install systemd-container debootstrap`; the first run
builds the cached rootfs (~1 min), later runs boot in well under a second.
Traffic goes only to the hosts these tests boot (10.231.<index>.2 over veths).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from tests.testhost import TestHost, TesthostError, boot, boot_many, cleanup, leftovers, start

pytestmark = pytest.mark.testhost

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def host() -> Iterator[TestHost]:
    with boot() as h:
        yield h


@pytest.fixture(scope="module")
def ssh(host: TestHost) -> Iterator[paramiko.SSHClient]:
    client = host.connect()
    yield client
    client.close()


def run_ssh(client: paramiko.SSHClient, command: str) -> tuple[int, str, str]:
    _stdin, stdout, stderr = client.exec_command(command, timeout=30)
    rc = stdout.channel.recv_exit_status()
    return rc, stdout.read().decode(), stderr.read().decode()


# ------------------------------------------- independent leftover checks
# Deliberately not using the harness's own helpers: these look at /proc, sysfs
# and cgroupfs directly, so a bug in the harness cannot hide itself.


@dataclass(frozen=True)
class Footprint:
    name: str
    leader: int
    state_dir: Path
    veth: str
    cgroups: tuple[Path, ...]


def footprint(h: TestHost) -> Footprint:
    assert h.leader is not None
    return Footprint(h.name, h.leader, h.state_dir, h.veth, tuple(h.cgroups))


def nspawn_pids(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"systemd-nspawn") and f"--machine={name}".encode() in args:
            pids.append(int(entry.name))
    return pids


def mount_points_under(path: Path) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point == str(path) or point.startswith(f"{path}/"):
            points.append(point)
    return points


def pid_alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def assert_present(fp: Footprint) -> None:
    assert nspawn_pids(fp.name), "nspawn should be running"
    assert pid_alive(fp.leader)
    assert mount_points_under(fp.state_dir)
    assert Path("/sys/class/net", fp.veth).exists()
    assert fp.state_dir.is_dir()
    assert fp.cgroups and all(p.is_dir() for p in fp.cgroups)


def assert_gone(fp: Footprint) -> None:
    assert nspawn_pids(fp.name) == []
    assert not pid_alive(fp.leader), "the container's systemd survived"
    assert mount_points_under(fp.state_dir) == []
    assert not Path("/sys/class/net", fp.veth).exists()
    assert not fp.state_dir.exists()
    for cgroup in fp.cgroups:
        assert not cgroup.exists(), cgroup


# ---------------------------------------------- (1) SSH, systemd, Caddy


def test_system_running_over_ssh_with_nodelay(host: TestHost, ssh: paramiko.SSHClient) -> None:
    transport = ssh.get_transport()
    assert transport is not None and transport.is_authenticated()
    sock = transport.sock
    assert isinstance(sock, socket.socket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert sock.getpeername() == (host.address, host.ssh_port)

    rc, out, _ = run_ssh(ssh, "systemctl is-system-running")
    assert (rc, out.strip()) == (0, "running")


def test_systemctl_over_ssh(ssh: paramiko.SSHClient) -> None:
    rc, out, _ = run_ssh(ssh, "systemctl is-active caddy.service ssh.service systemd-networkd")
    assert rc == 0
    assert out.split() == ["active", "active", "active"]
    rc, out, _ = run_ssh(ssh, "systemctl restart caddy && systemctl show -p ActiveState caddy")
    assert (rc, out.strip()) == (0, "ActiveState=active")
    rc, out, _ = run_ssh(ssh, "id -un; hostname")
    assert rc == 0 and out.split()[0] == "root"


def test_caddy_welcome_page(host: TestHost) -> None:
    response = host.wait_http("/", timeout=10)  # the restart above may still be settling
    response = host.http("/")
    assert response.status == 200
    assert "Caddy works!" in response.text
    assert response.headers["server"] == "Caddy"  # case-insensitive lookup
    assert "text/html" in response.headers["Content-Type"]
    assert host.http("/no-such-page").status == 404


def test_host_key_is_verified(host: TestHost, tmp_path: Path) -> None:
    """connect() trusts only host.known_hosts: a wrong key there must be refused."""
    assert host.known_hosts.read_text().startswith(f"{host.address} ssh-ed25519 ")
    other_key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    wrong = tmp_path / "known_hosts"
    kind, data = Path(f"{other_key}.pub").read_text().split()[:2]
    wrong.write_text(f"{host.address} {kind} {data}\n")
    client = paramiko.SSHClient()
    client.load_host_keys(str(wrong))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException):
        client.connect(
            host.address,
            username="root",
            key_filename=str(host.key_path),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
    client.close()


def test_openssh_client_reaches_host(host: TestHost) -> None:
    """The printed ssh command line works with strict host-key checking."""
    result = subprocess.run(
        [*host.ssh_command(), "systemctl", "is-active", "ssh"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "active"


def test_password_login_is_refused(host: TestHost) -> None:
    with socket.create_connection((host.address, host.ssh_port), timeout=10) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=10)
            with pytest.raises(paramiko.BadAuthenticationType) as err:
                transport.auth_password("root", "root")
            assert err.value.allowed_types == ["publickey"]
        finally:
            transport.close()


# ---------------------------------------------- (2) several hosts at once


def test_two_hosts_at_once(host: TestHost) -> None:
    with boot_many(2) as (a, b):
        names = {host.name, a.name, b.name}
        addresses = {host.address, a.address, b.address}
        assert len(names) == 3 and len(addresses) == 3
        for h in (a, b):
            assert h.http("/").status == 200
            client = h.connect()
            try:
                rc, out, _ = run_ssh(client, "hostname; cat /etc/machine-id")
            finally:
                client.close()
            hostname, machine_id = out.split()
            assert (rc, hostname) == (0, h.name)
            assert len(machine_id) == 32
            # Own cgroup subtree: the container's PID 1 lives below its own dir.
            assert h.leader is not None
            cgroup = Path(f"/proc/{h.leader}/cgroup").read_text()
            assert f"/reconciler-testhost/{h.name}/" in cgroup
        # Fresh machine-id per boot, not one shared from the build.
        ids = {h.read("/etc/machine-id") for h in (host, a, b)}
        assert len(ids) == 3
        # Separate root file systems.
        a.write("/root/only-on-a", b"a")
        assert b.read("/root/only-on-a") is None
        assert host.read("/root/only-on-a") is None


def test_explicit_index_and_conflict() -> None:
    # Another pytest process may hold some index: take the first free one >= 200.
    for index in range(200, 255):
        try:
            h = start(index)
        except TesthostError as exc:
            if "in use" in str(exc):
                continue
            raise
        break
    else:
        pytest.fail("no free subnet index in 200..254")
    try:
        assert (h.name, h.address, h.gateway) == (
            f"rth{index}",
            f"10.231.{index}.2",
            f"10.231.{index}.1",
        )
        assert h.ssh_target == f"ssh://root@10.231.{index}.2:22"
        with pytest.raises(TesthostError, match="in use"), boot(index=index):
            pass
        assert h.exec("systemctl is-system-running").stdout.strip() == "running"
    finally:
        h.stop()


# ---------------------------------------------- (3) teardown leaves nothing


def test_stop_leaves_nothing_behind() -> None:
    with boot() as h:
        fp = footprint(h)
        assert_present(fp)
    assert h.stopped
    assert_gone(fp)
    h.stop()  # idempotent
    assert leftovers(fp.name) == []


def test_exception_in_with_block_still_tears_down() -> None:
    fp: Footprint | None = None
    with pytest.raises(RuntimeError, match="boom"), boot() as h:
        fp = footprint(h)
        raise RuntimeError("boom")
    assert fp is not None
    assert_gone(fp)


def test_cleanup_removes_leftovers_of_crashed_process(host: TestHost) -> None:
    """A process that dies without teardown leaves a running host behind; cleanup
    removes it and leaves hosts of live processes (our module host) alone."""
    script = textwrap.dedent(
        """
        import os
        from tests.testhost import start
        h = start()
        print(h.name, h.leader, flush=True)
        os._exit(0)  # no atexit, no teardown: like a crash
        """
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.split()
        name, leader = out[0], int(out[1])
        orphan = Footprint(
            name,
            leader,
            Path("/run/reconciler-testhost") / name,
            f"ve-{name}",
            tuple(host_cgroup.parent / name for host_cgroup in host.cgroups),
        )
        assert_present(orphan)

        report = cleanup()

        assert_gone(orphan)
        # (Another pytest process's cleanup may have got to the orphan first.)
        assert any(line.startswith(f"{name}: removed") for line in report) or name not in str(report)
        assert any(line.startswith(f"{host.name}: in use") for line in report), report
        assert host.exec("systemctl is-system-running").stdout.strip() == "running"
    finally:
        # If this test fails or is interrupted halfway, do not leave the
        # deliberately orphaned host running.
        cleanup()


# ------------------------------------ (4) exec, files, tree_state, python


def test_exec(host: TestHost) -> None:
    result = host.exec("echo $((6 * 7)); echo err >&2; hostname")
    assert (result.rc, result.stdout, result.stderr) == (0, f"42\n{host.name}\n", "err\n")
    assert host.exec(["cat"], input=b"piped").stdout == "piped"
    assert host.exec(["sh", "-c", "echo $FOO"], env={"FOO": "bar"}).stdout == "bar\n"
    assert host.exec("echo $PATH").stdout.startswith("/usr/local/sbin:")
    # Runs in the host's namespaces: its PID 1 is systemd, its address is ours.
    assert host.exec(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    assert host.address in host.exec(["ip", "-br", "addr", "show", "host0"]).stdout
    failed = host.exec("echo out; exit 3", check=False)
    assert (failed.rc, failed.ok, failed.stdout) == (3, False, "out\n")
    with pytest.raises(TesthostError, match=r"rc=3(.|\n)*visible-output"):
        host.exec("echo visible-output; exit 3")
    started = time.monotonic()
    with pytest.raises(TesthostError, match="timed out"):
        host.exec(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - started < 5
    assert host.exec("pgrep -x sleep", check=False).rc == 1, "timed-out command left behind"


def test_read_write(host: TestHost) -> None:
    assert host.read("/etc/no-such-file") is None
    assert host.read("/etc/hostname") == f"{host.name}\n".encode()
    host.write("/root/new/dir/file.bin", b"\x00\x01data", mode=0o600)
    assert host.read("/root/new/dir/file.bin") == b"\x00\x01data"
    assert host.exec("stat -c %a:%U /root/new/dir/file.bin").stdout.strip() == "600:root"
    host.write("/root/new/dir/file.bin", b"short", mode=0o640)  # truncates, re-modes
    assert host.exec(["cat", "/root/new/dir/file.bin"]).stdout == "short"
    assert host.exec("stat -c %a /root/new/dir/file.bin").stdout.strip() == "640"
    # The host's own mounts are visible (/run is a tmpfs inside the host).
    host.exec("echo from-inside > /run/marker")
    assert host.read("/run/marker") == b"from-inside\n"
    host.write("/tmp/from-outside", b"x")
    assert host.exec(["cat", "/tmp/from-outside"]).stdout == "x"
    # Absolute symlinks resolve inside the host, not on this machine.
    host.exec("ln -sfn /etc/hostname /root/abs-link && ln -sfn ../etc/hostname /root/rel-link")
    assert host.read("/root/abs-link") == f"{host.name}\n".encode()
    assert host.read("/root/rel-link") == f"{host.name}\n".encode()


def test_share_and_src(host: TestHost) -> None:
    (host.share / "artifact.txt").write_text("dropped here")
    assert host.exec(["cat", "/share/artifact.txt"]).stdout == "dropped here"
    host.exec("echo back > /share/from-host.txt")
    assert (host.share / "from-host.txt").read_text() == "back\n"
    assert host.exec(["test", "-f", "/src/pyproject.toml"], check=False).rc == 0
    denied = host.exec(["touch", "/src/should-not-exist"], check=False)
    assert denied.rc != 0 and "Read-only file system" in denied.stderr
    assert not (REPO / "should-not-exist").exists()


def test_tree_state(host: TestHost) -> None:
    host.exec(
        "rm -rf /srv/t && mkdir -p /srv/t/sub && printf abc > /srv/t/f && "
        "printf xyz > /srv/t/sub/g && chmod 750 /srv/t/sub && ln -s ../f /srv/t/sub/link"
    )
    state = host.tree_state(["/srv/t", "/srv/missing"])
    abc_sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert state["/srv/t"] == ("dir", 0o755, None)
    assert state["/srv/t/f"] == ("file", 0o644, abc_sha)
    assert state["/srv/t/sub"] == ("dir", 0o750, None)
    assert state["/srv/t/sub/link"][0::2] == ("symlink", "../f")
    assert set(state) == {"/srv/t", "/srv/t/f", "/srv/t/sub", "/srv/t/sub/g", "/srv/t/sub/link"}
    assert host.tree_state(["/srv/t"]) == state  # stable when nothing changed

    host.exec("printf abd > /srv/t/f")
    changed = host.tree_state(["/srv/t"])
    assert changed["/srv/t/f"][2] != abc_sha
    host.exec("printf abc > /srv/t/f && chmod 600 /srv/t/sub/g")
    assert host.tree_state(["/srv/t"])["/srv/t/sub/g"][1] == 0o600
    host.exec("chmod 644 /srv/t/sub/g && ln -sfn /etc /srv/t/sub/link")
    assert host.tree_state(["/srv/t"])["/srv/t/sub/link"][2] == "/etc"
    # A single file, and a symlink given directly, are entries of their own.
    assert host.tree_state(["/srv/t/f"]) == {"/srv/t/f": ("file", 0o644, abc_sha)}
    assert host.tree_state(["/srv/t/sub/link"])["/srv/t/sub/link"][0] == "symlink"


def test_host_python_has_runtime_deps(host: TestHost) -> None:
    code = (
        "import yaml, jsonschema, paramiko, watchfiles, structlog, sys; "
        "print(sys.version_info[:2], yaml.safe_load('a: 1'))"
    )
    result = host.exec([host.python, "-c", code])
    assert result.stdout.strip() == "(3, 11) {'a': 1}"
    # The repository is importable from /src (read-only bind mount).
    result = host.exec(
        [host.python, "-c", "import tests.testhost.layout as l; print(l.NAME_PREFIX)"],
        env={"PYTHONPATH": "/src"},
    )
    assert result.stdout.strip() == "rth"
    # No route off the veth: the host reaches this machine but nothing beyond.
    routes = host.exec(["ip", "route"]).stdout
    assert "default" not in routes
