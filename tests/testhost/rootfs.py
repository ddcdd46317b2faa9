"""Build and cache the Debian bookworm rootfs every test host boots from.

The rootfs is built once (debootstrap + fix-ups + an offline-installed venv) and
cached outside the repository. The cache directory is named after a hash of the
recipe: this file's source, wheels.py's source, the package list and the
project's runtime requirements. Any change to them yields a new name, so the
next ensure_rootfs() rebuilds by itself. A build happens in a temporary
directory that is renamed into place only when complete, so an interrupted
build never leaves a half cache behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from tests.testhost import preflight, wheels
from tests.testhost.commands import run, tail_file
from tests.testhost.errors import TesthostError
from tests.testhost.layout import cache_dir
from tests.testhost.mounts import lowerdirs_in_use, mounts_under, unmount_all_under

log = logging.getLogger(__name__)

SUITE = "bookworm"
#: Rootful Podman (bookworm: 4.3.1) for container deployments. Listed one by one
#: because debootstrap installs no Recommends: netavark and aardvark-dns are the
#: network stack (`--publish`, named networks), iptables writes netavark's port
#: forwarding rules, catatonit is `podman run --init`. fuse-overlayfs,
#: slirp4netns and uidmap are what rootless Podman needs; ~1 MB together.
PODMAN_PACKAGES: tuple[str, ...] = (
    "podman",
    "crun",
    "netavark",
    "aardvark-dns",
    "iptables",
    "fuse-overlayfs",
    "slirp4netns",
    "uidmap",
    "catatonit",
)
PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "caddy",
    "python3",
    "python3-venv",
    "iproute2",
    "procps",
    "curl",
    "sqlite3",
    "sudo",  # tests of a deploy user that is not root (passwordless sudo, or none)
    *PODMAN_PACKAGES,
)
VENV = "/opt/reconciler-venv"

#: Units that only cost boot time or fail without hardware in a container.
MASKED_UNITS: tuple[str, ...] = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "apt-daily.service",
    "apt-daily-upgrade.service",
    "e2scrub_all.timer",
    "e2scrub_all.service",
    "e2scrub_reap.service",
    "fstrim.timer",
    "fstrim.service",
    "dpkg-db-backup.timer",
    "dpkg-db-backup.service",
    "getty@.service",
    "serial-getty@.service",
    "console-getty.service",
    "container-getty@.service",
    "getty.target",
    "systemd-pstore.service",
)

#: Units Debian's podman package enables: the API service (in default.target,
#: so it would start at every boot) and its socket, the boot-time restart of
#: `--restart=always` containers (waits for network-online) and the daily
#: auto-update. Enabled they add ~0.1 s to every boot. Disabled, not masked: a
#: test that wants the API can still start podman.socket.
DISABLED_UNITS: tuple[str, ...] = (
    "podman.service",
    "podman.socket",
    "podman-restart.service",
    "podman-auto-update.service",
    "podman-auto-update.timer",
)

#: Podman settings for running inside an nspawn container (see the README):
#: nspawn's seccomp filter refuses keyctl() ("create keyring: Operation not
#: permitted"), and it mounts the cgroup v1 controllers read-only, so Podman can
#: create no per-container cgroups (and so sets no resource limits here).
CONTAINERS_CONF = """\
[containers]
keyring = false
cgroups = "disabled"

[network]
network_backend = "netavark"
"""

#: Clean environment for commands run inside the rootfs: this machine's pip
#: settings (index URLs, find-links, constraints) must not leak into the chroot.
CHROOT_ENV: dict[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_NO_CACHE_DIR": "1",
}

_build_lock = threading.Lock()


def mirror() -> str:
    """The Debian mirror this machine's apt uses: never a hard-coded host name."""
    override = os.environ.get("RECONCILER_TESTHOST_MIRROR")
    if override:
        return override
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        # deb822: stanzas separated by blank lines; take the one serving the
        # plain suite (not -security/-updates), else the first with a URI.
        stanzas = re.split(r"\n\s*\n", sources.read_text())
        candidates: list[tuple[bool, str]] = []
        for stanza in stanzas:
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            uris = fields.get("uris", "").split()
            if uris and "deb" in fields.get("types", "deb").split():
                candidates.append((SUITE in fields.get("suites", "").split(), uris[0]))
        preferred = [uri for serves, uri in candidates if serves]
        others = [uri for serves, uri in candidates if not serves]
        if preferred or others:
            return (preferred or others)[0]
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.exists():
        for line in sources_list.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                return words[1]
    raise TesthostError(
        "cannot find a Debian mirror in /etc/apt/sources.list.d/debian.sources or "
        "/etc/apt/sources.list; set RECONCILER_TESTHOST_MIRROR"
    )


def recipe_hash() -> str:
    """Hash of everything that determines the rootfs contents."""
    digest = hashlib.sha256()
    for source in (Path(__file__), Path(wheels.__file__)):
        digest.update(source.read_bytes())
    recipe = {
        "suite": SUITE,
        "packages": PACKAGES,
        "requirements": wheels.runtime_requirements(),
        "masked": MASKED_UNITS,
        "disabled": DISABLED_UNITS,
    }
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    return digest.hexdigest()


def cache_entry(stamp: str | None = None) -> Path:
    """Directory holding rootfs/, wheels/ and manifest.json for one recipe."""
    return cache_dir() / f"rootfs-{(stamp or recipe_hash())[:16]}"


def ensure_rootfs(*, force: bool = False) -> Path:
    """Return the cached rootfs for the current recipe, building it if needed.

    Safe to call from several threads and several processes at once: the build
    runs under a lock file, and whoever waited on it finds the finished cache.
    """
    stamp = recipe_hash()
    entry = cache_entry(stamp)
    if not force and _is_complete(entry):
        return entry / "rootfs"
    preflight.check(build=True)
    with _build_lock, _locked(cache_dir() / ".build.lock"):
        if not force and _is_complete(entry):
            return entry / "rootfs"
        if force and entry / "rootfs" in lowerdirs_in_use():
            # Replacing it would pull the lower layer out from under running
            # hosts (mountinfo keeps the old path, so nothing would protect it).
            raise TesthostError(f"{entry} is in use by running test hosts; stop them before `build --force`")
        _remove_stale_builds()
        started = time.monotonic()
        building = cache_dir() / f".build-{stamp[:16]}-{os.getpid()}"
        _build(building, stamp)
        _replace(entry, building)
        log.info("built %s in %.1f s", entry, time.monotonic() - started)
        _remove_unused_entries(keep=entry)
    return entry / "rootfs"


def _is_complete(entry: Path) -> bool:
    return (entry / "manifest.json").is_file() and (entry / "rootfs" / "usr").is_dir()


def remove_interrupted_builds() -> list[Path]:
    """For `cleanup`: remove half builds of killed processes unless a build is running."""
    if not cache_dir().is_dir():
        return []
    stale = sorted(cache_dir().glob(".build-*"))
    if not stale:
        return []
    with _locked(cache_dir() / ".build.lock", wait=False) as locked:
        if not locked:
            return []  # a build is running right now; its directory is not stale
        _remove_stale_builds()
    return stale


@contextmanager
def _locked(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """flock() on path for the duration; yields False if wait=False and it is taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _build(building: Path, stamp: str) -> None:
    """Build a complete cache entry in `building` (removed again on failure)."""
    rootfs = building / "rootfs"
    wheel_dir = building / "wheels"
    building.mkdir(parents=True)
    try:
        requirements = wheels.runtime_requirements()
        # The wheel download needs only the network, debootstrap mostly the
        # disk: run them side by side to shorten a cold build.
        with ThreadPoolExecutor(max_workers=1) as pool:
            wheel_job: Future[list[str]] = pool.submit(
                wheels.download, wheel_dir, requirements, building / "pip-download.log"
            )
            source = mirror()
            started = time.monotonic()
            _debootstrap(rootfs, source, building / "debootstrap.log")
            log.info("debootstrap took %.1f s", time.monotonic() - started)
            wheel_files = wheel_job.result()
        _apply_fixups(rootfs)
        started = time.monotonic()
        _install_venv(rootfs, wheel_dir, requirements, building / "venv.log")
        log.info("venv install took %.1f s", time.monotonic() - started)
        # debootstrap keeps the downloaded .debs: ~100 MB nobody needs.
        for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        manifest = {
            "recipe_hash": stamp,
            "suite": SUITE,
            "mirror": source,
            "packages": PACKAGES,
            "requirements": requirements,
            "wheels": wheel_files,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (building / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    except BaseException:
        _remove_tree(building)
        raise


def _debootstrap(rootfs: Path, source: str, log_path: Path) -> None:
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(rootfs),
        source,
    ]
    with log_path.open("wb") as out:
        result = run(argv, timeout=1200, check=False)
        out.write(result.stdout + result.stderr)
    if result.returncode != 0:
        raise TesthostError(
            f"debootstrap failed (rc={result.returncode}): {' '.join(argv)}\n{tail_file(log_path)}"
        )


def _write(rootfs: Path, path: str, text: str, mode: int = 0o644) -> None:
    target = rootfs / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()
    target.write_text(text)
    target.chmod(mode)


def _apply_fixups(rootfs: Path) -> None:
    """The recipe's fix-ups that make a debootstrapped tree boot cleanly and fast."""
    # debootstrap writes no /etc/hosts; without it Caddy's admin endpoint cannot
    # resolve "localhost". The per-boot host name line is added at boot.
    _write(rootfs, "/etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    # Empty machine-id: systemd then makes a fresh one per boot (from nspawn's
    # random container UUID) instead of all hosts sharing the build's id. dbus's
    # postinst left its own copy, which systemd would otherwise adopt for every
    # host ("Initializing machine ID from D-Bus machine ID"): point it back.
    _write(rootfs, "/etc/machine-id", "", 0o444)
    dbus_id = rootfs / "var/lib/dbus/machine-id"
    dbus_id.unlink(missing_ok=True)
    dbus_id.symlink_to("/etc/machine-id")
    # Key auth only; the host key is a fresh ed25519 key written per boot (the
    # build's keys would be shared by every host), so sshd loads only that one.
    _write(
        rootfs,
        "/etc/ssh/sshd_config.d/50-reconciler-testhost.conf",
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UseDNS no\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n",
    )
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Masked units: symlink to /dev/null, and drop their .wants links so nothing
    # even tries to pull them in.
    system = rootfs / "etc/systemd/system"
    for wants_link in system.glob("*.wants/*"):
        if wants_link.name in MASKED_UNITS:
            wants_link.unlink()
    for unit in MASKED_UNITS:
        link = system / unit
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to("/dev/null")
    run(["chroot", rootfs, "systemctl", "disable", *DISABLED_UNITS], env=CHROOT_ENV)
    # Static addressing is per boot (80-container-host0.network written at
    # boot); networkd applies it. Without the drop-in, wait-online waits for
    # every link and the boot stalls.
    run(["chroot", rootfs, "systemctl", "enable", "systemd-networkd.service"], env=CHROOT_ENV)
    _write(
        rootfs,
        "/etc/systemd/system/systemd-networkd-wait-online.service.d/50-any.conf",
        "[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=5\n",
    )
    root_ssh = rootfs / "root/.ssh"
    root_ssh.mkdir(mode=0o700, exist_ok=True)
    root_ssh.chmod(0o700)
    # Podman's storage (/var/lib/containers) is not set up here: every boot
    # bind-mounts its own empty directory there (nspawn.argv).
    _write(rootfs, "/etc/containers/containers.conf", CONTAINERS_CONF)


def _install_venv(rootfs: Path, wheel_dir: Path, requirements: list[str], log_path: Path) -> None:
    """python3 -m venv inside the rootfs, then an offline pip install from the wheelhouse."""
    inside = "/tmp/reconciler-wheels"
    staged = rootfs / inside.lstrip("/")
    shutil.copytree(wheel_dir, staged)
    try:
        steps = [
            ["chroot", str(rootfs), "/usr/bin/python3", "-m", "venv", VENV],
            [
                "chroot", str(rootfs), f"{VENV}/bin/python", "-m", "pip", "install",
                "--no-index", "--find-links", inside, *requirements,
            ],
        ]  # fmt: skip
        with log_path.open("wb") as out:
            for argv in steps:
                result = run(argv, env=CHROOT_ENV, timeout=600, check=False)
                out.write(result.stdout + result.stderr)
                if result.returncode != 0:
                    out.flush()
                    raise TesthostError(
                        f"installing the host venv failed: {' '.join(argv)}\n{tail_file(log_path)}"
                    )
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _replace(entry: Path, building: Path) -> None:
    """Move a finished build into place; an old entry of the same name goes to trash."""
    if entry.exists():
        trash = entry.with_name(f".trash-{entry.name}-{time.time_ns()}")
        entry.rename(trash)
    building.rename(entry)


def _remove_tree(path: Path) -> None:
    """rm -rf that never reaches into a mount below path."""
    if not path.exists():
        return
    unmount_all_under(path)
    if mounts_under(path):
        raise TesthostError(f"refusing to delete {path}: something is still mounted below it")
    shutil.rmtree(path)


def _processes_using(path: Path) -> list[int]:
    """PIDs whose root, cwd or command line points into path."""
    found: list[int] = []
    prefix = str(path)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            places = [os.readlink(entry / "root"), os.readlink(entry / "cwd")]
            places += (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(p == prefix or p.startswith(prefix + "/") for p in places):
            found.append(int(entry.name))
    return found


def _remove_stale_builds() -> None:
    """Leftovers of interrupted builds (only called while holding the build lock).

    A build killed with SIGKILL leaves debootstrap and its dpkg/chroot children
    running on their own, still writing into the directory: stop them first.
    """
    for stale in cache_dir().glob(".build-*"):
        if not stale.is_dir():
            continue
        log.info("removing interrupted build %s", stale)
        for _attempt in range(50):
            pids = _processes_using(stale)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        _remove_tree(stale)


def _remove_unused_entries(*, keep: Path) -> None:
    """Delete cache entries of older recipes unless a running host still uses them."""
    in_use = lowerdirs_in_use()
    for entry in [*cache_dir().glob("rootfs-*"), *cache_dir().glob(".trash-rootfs-*")]:
        if entry == keep or not entry.is_dir():
            continue
        if entry / "rootfs" in in_use:
            log.info("keeping %s: a running host still boots from it", entry)
            continue
        log.info("removing outdated cache entry %s", entry)
        shutil.rmtree(entry)
