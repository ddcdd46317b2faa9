"""Whom the reconciler trusts and as whom it acts, on real hosts, over both SSH transports:
known_hosts as OpenSSH writes it (comments, hashed names, `@revoked`, `@cert-authority`),
`--accept-new-host-key` across a fleet at once, and a login that is not root."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.engine.once import RunOptions, reconcile_once
from reconciler.errors import TargetError
from reconciler.executors.connect import executor_for
from reconciler.executors.known_hosts import hash_name
from reconciler.executors.openssh import OpenSSHExecutor
from reconciler.executors.ssh_options import SSHOptions
from reconciler.spec.load import load
from reconciler.spec.model import Target
from tests.deploying import REPO, WATCHED_PATHS, Project, serves
from tests.testhost import TestHost, boot_many

pytestmark = pytest.mark.testhost

TRANSPORTS = ["paramiko", "openssh"]


def new_key(path: Path) -> str:
    """A fresh ed25519 key pair; returns the public line (type, base64, comment)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "other", "-f", str(path)], check=True
    )
    return path.with_name(path.name + ".pub").read_text().strip()


def host_key(host: TestHost) -> str:
    """`ssh-ed25519 AAAA...` of the host (no comment)."""
    return " ".join(host.known_hosts.read_text().split()[1:3])


def close_master(host: TestHost, user: str = "root") -> None:
    OpenSSHExecutor(Target("ssh", host=host.address, user=user, port=22)).close_master()


def marked_known_hosts(tmp_path: Path, hashed: str, key: str) -> str:
    """known_hosts as a seasoned user has it: comments, a revoked key, a CA for another
    domain, another host, and `hashed` with `key`, its name hashed (as `HashKnownHosts yes`,
    Debian's default, writes it)."""
    other = new_key(tmp_path / "other").split()
    ca = new_key(tmp_path / "ca").split()
    return (
        "# kept by hand: do not lose this comment\n"
        f"@revoked * {other[0]} {other[1]}\n"
        f"@cert-authority *.example.com {ca[0]} {ca[1]} the fleet CA\n"
        f"web1.example.com,203.0.113.10 {other[0]} {other[1]}\n"
        f"{hash_name(hashed, os.urandom(20))} {key}\n"
    )


# --- 1. known_hosts markers -------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_host_keys_with_markers_and_hashed_names_are_read_as_openssh_does(
    project: Project, tmp_path: Path, transport: str
) -> None:
    project.write("1.0.0")
    close_master(project.host)
    known = tmp_path / "known_hosts"
    known.write_text(marked_known_hosts(tmp_path, project.host.address, host_key(project.host)))
    before = known.read_bytes()
    run = project.once("--dry-run", "--ssh", transport, known_hosts=known)
    assert run.rc == 2, run.stdout + run.stderr  # changes pending: the host was trusted and observed
    again = project.once("--dry-run", "--ssh", transport, "--accept-new-host-key", known_hosts=known)
    assert again.rc == 2, again.stdout + again.stderr
    assert known.read_bytes() == before  # a known host adds nothing


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_revoked_host_key_is_refused(project: Project, tmp_path: Path, transport: str) -> None:
    project.write("1.0.0")
    close_master(project.host)
    known = tmp_path / "known_hosts"
    known.write_text(
        f"{project.host.address} {host_key(project.host)}\n# revoked after a leak\n@revoked * {host_key(project.host)}\n"
    )
    before = project.host.tree_state(WATCHED_PATHS)
    for flags in ((), ("--accept-new-host-key",)):
        run = project.once("--ssh", transport, *flags, known_hosts=known)
        assert run.rc == 1, run.stdout + run.stderr
        error = run.json["error"]
        assert "REVOKED" in error and "Traceback" not in run.stderr, error
        if transport == "paramiko":
            assert f"{known}:3" in error, error  # names the line that revoked it
    assert project.host.tree_state(WATCHED_PATHS) == before


def test_the_host_is_asked_for_a_key_of_the_type_known_hosts_has(project: Project, tmp_path: Path) -> None:
    """The host has an ed25519 and an RSA key, known_hosts only the RSA one: as OpenSSH does,
    the RSA key is asked for first (otherwise the ed25519 key would look like a changed key)."""
    host = project.host
    project.write("1.0.0")
    host.exec(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", "/etc/ssh/ssh_host_rsa_key"])
    host.write("/etc/ssh/sshd_config.d/60-rsa.conf", b"HostKey /etc/ssh/ssh_host_rsa_key\n")
    host.exec(["systemctl", "reload", "ssh"])
    try:
        rsa = " ".join((host.read("/etc/ssh/ssh_host_rsa_key.pub") or b"").decode().split()[:2])
        known = tmp_path / "known_hosts"
        known.write_text(f"{host.address} {rsa}\n")
        run = project.once("--dry-run", known_hosts=known)
        assert run.rc == 2, run.stdout + run.stderr
    finally:
        host.exec(["rm", "-f", "/etc/ssh/sshd_config.d/60-rsa.conf", "/etc/ssh/ssh_host_rsa_key"])
        host.exec(["systemctl", "reload", "ssh"])


def certify_host(host: TestHost, tmp_path: Path) -> str:
    """Sign the host's key with a new CA and have sshd offer the certificate; returns the
    CA's public key (type and base64)."""
    ca = new_key(tmp_path / "host_ca").split()
    pub = tmp_path / "ssh_host_ed25519_key.pub"
    pub.write_bytes(host.read("/etc/ssh/ssh_host_ed25519_key.pub") or b"")
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-s",
            str(tmp_path / "host_ca"),
            "-I",
            host.name,
            "-h",
            "-n",
            host.address,
            str(pub),
        ],
        check=True,
    )
    host.write(
        "/etc/ssh/ssh_host_ed25519_key-cert.pub", (tmp_path / "ssh_host_ed25519_key-cert.pub").read_bytes()
    )
    host.write(
        "/etc/ssh/sshd_config.d/60-host-certificate.conf",
        b"HostCertificate /etc/ssh/ssh_host_ed25519_key-cert.pub\n",
    )
    host.exec(["systemctl", "reload", "ssh"])
    return f"{ca[0]} {ca[1]}"


@pytest.fixture
def certified(project: Project, tmp_path: Path) -> Iterator[str]:
    ca = certify_host(project.host, tmp_path)
    try:
        yield ca
    finally:
        project.host.exec(["rm", "-f", "/etc/ssh/sshd_config.d/60-host-certificate.conf"])
        project.host.exec(["systemctl", "reload", "ssh"])


def test_host_certificates_need_openssh_and_work_with_it(
    project: Project, tmp_path: Path, certified: str
) -> None:
    project.write("1.0.0")
    close_master(project.host)
    known = tmp_path / "known_hosts"
    known.write_text(f"# our CA signs every host key\n@cert-authority {project.host.address} {certified}\n")
    before = known.read_bytes()
    for flags in ((), ("--accept-new-host-key",)):
        run = project.once("--dry-run", *flags, known_hosts=known)
        assert run.rc == 1, run.stdout + run.stderr
        error = run.json["error"]
        assert "--ssh openssh" in error and f"{known}:2" in error and "Traceback" not in run.stderr, error
    assert known.read_bytes() == before  # never trusted on first use around the CA
    run = project.once("--dry-run", "--ssh", "openssh", known_hosts=known)
    assert run.rc == 2, run.stdout + run.stderr  # the certificate was verified against the CA
    close_master(project.host)


# --- 2. --accept-new-host-key across a fleet ----------------------------------------------------


@pytest.fixture(scope="module")
def fleet() -> Iterator[list[TestHost]]:
    with boot_many(4) as hosts:
        yield hosts


def test_accept_new_host_keys_of_a_fleet_at_once_appends_one_line_each(
    fleet: list[TestHost], artifacts: dict[str, Path], tmp_path: Path
) -> None:
    targets = "".join(f"  - {{target: {h.ssh_target}, name: h{i}}}\n" for i, h in enumerate(fleet))
    desired = tmp_path / "desired-state.yaml"
    desired.write_text(
        f'app: choiros\ntarget:\n{targets}release:\n  version: "1.0.0"\n  source: {artifacts["1.0.0"]}\n'
        "backend:\n  command: bin/backend --port {port}\n  port: 8080\n"
    )
    known = tmp_path / "known_hosts"
    stranger = " ".join(new_key(tmp_path / "stranger").split()[:2])
    original = marked_known_hosts(tmp_path, "203.0.113.99", stranger).rstrip("\n")  # no final newline
    known.write_text(original)

    def run(*flags: str) -> subprocess.CompletedProcess[str]:
        cmd = [
            sys.executable,
            "-m",
            "reconciler",
            "--once",
            "--dry-run",
            "--json",
            *flags,
            "-f",
            str(desired),
        ]
        for host in fleet:
            cmd += ["-i", str(host.key_path)]
        return subprocess.run(
            [*cmd, "--known-hosts", str(known)],
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            check=False,
            timeout=120,
        )

    refused = run()
    assert refused.returncode == 1 and "unknown" in refused.stdout, refused.stdout + refused.stderr
    accepted = run("--accept-new-host-key")
    assert accepted.returncode == 2, accepted.stdout + accepted.stderr  # observed every host
    text = known.read_text()
    assert text.startswith(original + "\n"), "an original byte changed"
    added = sorted(text[len(original) + 1 :].splitlines())
    assert added == sorted(f"{h.address} {host_key(h)}" for h in fleet)
    again = run()
    assert again.returncode == 2, again.stdout + again.stderr  # now known, without the flag
    assert known.read_text() == text
    print(f"\nfleet of {len(fleet)} new hosts accepted at once: original kept, {len(added)} lines added")


# --- 3. a login that is not root -------------------------------------------------------------------

USERS = """
set -e
for u in alice deploy carol; do
  id -u $u >/dev/null 2>&1 || useradd -m -s /bin/bash $u
  install -d -m 700 -o $u -g $u /home/$u/.ssh
  install -m 600 -o $u -g $u /root/.ssh/authorized_keys /home/$u/.ssh/authorized_keys
done
usermod -s /bin/sh carol
echo 'deploy ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/deploy
echo 'carol ALL=(ALL) ALL' > /etc/sudoers.d/carol
chmod 440 /etc/sudoers.d/deploy /etc/sudoers.d/carol
"""


@pytest.fixture
def users(project: Project) -> Project:
    """alice: no sudo; deploy: passwordless sudo; carol: sudo that wants a password."""
    project.host.exec(["bash", "-c", USERS])
    return project


def as_user(
    project: Project, tmp_path: Path, user: str, transport: str, **options: object
) -> TargetError | None:
    """One run through the engine, the user coming from an ssh config file (not the URL)."""
    config = tmp_path / f"ssh_config_{user}"
    config.write_text(f"Host {project.host.address}\n  User {user}\n")
    ssh = SSHOptions(
        identity=(str(project.host.key_path),),
        known_hosts=str(project.host.known_hosts),
        config_file=str(config),
        transport=transport,
        **options,  # type: ignore[arg-type]
    )
    desired = load(project.root / "desired-state.yaml", target_override=f"ssh://{project.host.address}")
    executor = executor_for(desired.target, ssh)
    try:
        reconcile_once(desired, executor, RunOptions())
    except TargetError as exc:
        return exc
    finally:
        executor.close()
    return None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_login_without_root_or_sudo_is_refused_before_planning(
    users: Project, tmp_path: Path, transport: str
) -> None:
    project = users
    project.write("1.0.0")
    before = project.host.tree_state(WATCHED_PATHS)
    uid = project.host.exec(["id", "-u", "alice"]).stdout.strip()
    for user, why in (("alice", "a password is required"), ("carol", "a password is required")):
        error = as_user(project, tmp_path, user, transport)
        assert error is not None, f"{user} over {transport} was not refused"
        text = str(error)
        assert f"as {user} (uid " in text and why in text, text
        assert f"connect as root or give {user} passwordless sudo" in text, text
    # the agent run without sudo (as an explicit `sudo=False` would): the snapshot says who
    error = as_user(project, tmp_path, "alice", transport, sudo=False)
    assert error is not None and f"connected as alice (uid {uid}) without root" in str(error), error
    assert "give alice passwordless sudo" in str(error)
    project.host.exec(["mv", "/usr/bin/sudo", "/usr/bin/sudo.off"])
    try:
        error = as_user(project, tmp_path, "alice", transport)
    finally:
        project.host.exec(["mv", "/usr/bin/sudo.off", "/usr/bin/sudo"])
    assert error is not None and "sudo is not installed" in str(error), error
    assert project.host.tree_state(WATCHED_PATHS) == before


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_login_with_passwordless_sudo_deploys(users: Project, tmp_path: Path, transport: str) -> None:
    project = users
    project.write("1.0.0")
    assert as_user(project, tmp_path, "deploy", transport) is None
    assert serves(project.host) == "1.0.0"
    owner = project.host.exec(["stat", "-c", "%U", "/opt/choiros/releases/1.0.0"]).stdout.strip()
    assert owner == "root"


def test_a_local_run_without_root_is_refused(project: Project) -> None:
    host = project.host
    share = Path(host.share) / "project"
    share.mkdir(parents=True, exist_ok=True)
    body = project.render("1.0.0").replace(f"target: {host.ssh_target}", "target: local")
    (share / "desired-state.yaml").write_text(body)
    run = host.exec(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", host.python, "-m", "reconciler",
         "--once", "--dry-run", "--json", "-f", "/share/project/desired-state.yaml"],
        env={"PYTHONPATH": "/src", "HOME": "/tmp", "XDG_CACHE_HOME": "/tmp/cache"},
        check=False,
    )  # fmt: skip
    assert run.rc == 1, run.stdout + run.stderr
    assert (
        "running as nobody (uid 65534) without root" in run.stdout and "run reconcile as root" in run.stdout
    )
