"""Build and cache the Debian root filesystems test hosts boot from.

Three variants: bookworm (the default: python3 3.11, systemd 252, Caddy, Podman,
and a venv with the project's runtime dependencies, so the reconciler itself can
run inside), docker (bookworm with Docker instead of Podman: Debian's docker.io,
vfs storage; only the agent runs there) and bullseye (python3 3.9, systemd 247:
the oldest host the reconciler supports; the agent is sent over SSH to /usr/bin/python3,
and a test installs the reconciler's wheel there into a venv of its own).

Each rootfs is built once (debootstrap + fix-ups, plus an offline-installed venv
for bookworm) and cached outside the repository, in a directory named after the
release and a hash of its recipe: this file's source, the package list, and for
bookworm wheels.py's source and the project's runtime requirements. Any change
to them yields a new name, so the next ensure_rootfs() rebuilds by itself. A
build happens in a temporary directory that is renamed into place only when
complete, so an interrupted build never leaves a half cache behind.
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
from dataclasses import dataclass
from pathlib import Path

from tests.testhost import preflight, wheels
from tests.testhost.commands import run, tail_file
from tests.testhost.errors import TesthostError
from tests.testhost.layout import cache_dir
from tests.testhost.mounts import lowerdirs_in_use, mounts_under, unmount_all_under

log = logging.getLogger(__name__)

#: The release a host boots unless told otherwise.
DEFAULT_RELEASE = "bookworm"
SUITE = DEFAULT_RELEASE
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
#: Docker instead of Podman (Debian bookworm's docker.io 20.10 with containerd, runc
#: and tini, which is `docker run --init`); no Podman at all, so a desired state that
#: does not name its runtime must find Docker by itself.
DOCKER_PACKAGES: tuple[str, ...] = (
    *(p for p in PACKAGES if p not in PODMAN_PACKAGES),
    "docker.io",
    "ca-certificates",
)
#: bullseye has no caddy package (Caddy is borrowed from bookworm, see
#: _borrow_caddy), and no Podman. The agent runs there on /usr/bin/python3; the
#: reconciler itself is installed the way the README tells a server to (python3-venv,
#: then pip from wheels carried in) and follows a git repository on the host (git).
#: media-types is what Debian's caddy package depends on for /etc/mime.types.
BULLSEYE_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-venv",
    "git",
    "iproute2",
    "procps",
    "curl",
    "sqlite3",
    "media-types",
)
VENV = "/opt/reconciler-venv"

#: Units that only cost boot time or fail without hardware in a container.
#: Masking a unit a release does not have (bullseye has no dpkg-db-backup) is harmless.
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

#: dockerd starts on demand (docker.socket, or a unit's Requires=docker.service): at
#: every boot it would cost a second that most tests do not need.
DOCKER_DISABLED_UNITS: tuple[str, ...] = ("docker.service", "containerd.service")

#: /etc/docker/daemon.json: the host's root is an overlay, where Docker's overlay2
#: cannot stack (its storage is bound in from this machine, see nspawn.argv, and vfs
#: works on any file system; it copies the whole image per container: ~35 MB here).
DOCKER_DAEMON_JSON = '{"storage-driver": "vfs"}\n'

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

#: Key auth only; the host key is a fresh ed25519 key written per boot (the
#: build's keys would be shared by every host), so sshd loads only that one.
SSHD_CONFIG = (
    "PermitRootLogin prohibit-password\n"
    "PasswordAuthentication no\n"
    "KbdInteractiveAuthentication no\n"
    "UseDNS no\n"
    "HostKey /etc/ssh/ssh_host_ed25519_key\n"
)


@dataclass(frozen=True)
class Release:
    """What the rootfs of one Debian release is made of."""

    name: str  #: the codename: debootstrap's suite, part of the cache entry's name
    packages: tuple[str, ...]
    disabled: tuple[str, ...] = ()
    #: A venv at VENV with the project's runtime dependencies: the reconciler runs inside.
    venv: bool = False
    #: containers.conf for rootful Podman inside nspawn.
    podman: bool = False
    #: The release whose rootfs lends its Caddy (this one has no caddy package).
    caddy_from: str | None = None
    #: Docker instead of Podman: vfs storage, and an nspawn that gives it what it needs
    #: (nspawn.argv): the unified cgroup hierarchy, keyctl() and bpf().
    docker: bool = False
    #: debootstrap's suite, when the variant's name is not the codename.
    suite: str = ""

    @property
    def codename(self) -> str:
        return self.suite or self.name

    @property
    def python(self) -> str:
        """The interpreter tests run code with: the venv's, else the system's python3."""
        return f"{VENV}/bin/python" if self.venv else "/usr/bin/python3"


RELEASES: dict[str, Release] = {
    "bookworm": Release("bookworm", PACKAGES, disabled=DISABLED_UNITS, venv=True, podman=True),
    "bullseye": Release("bullseye", BULLSEYE_PACKAGES, caddy_from="bookworm"),
    "docker": Release(
        "docker", DOCKER_PACKAGES, disabled=DOCKER_DISABLED_UNITS, docker=True, suite="bookworm"
    ),
}

#: Where a borrowed Caddy lives, with the loader and libraries it was built for:
#: Debian's caddy is built with cgo and needs glibc >= 2.34 and libzstd >= 1.5,
#: newer than bullseye's (2.31, 1.4.8). /usr/bin/caddy starts it through them.
BORROWED_CADDY = "/opt/caddy-bookworm"
CADDY_WRAPPER = f"""\
#!/bin/sh
# Debian bookworm's Caddy, run by bookworm's own dynamic loader with bookworm's
# libraries: this system's C library is too old for it. Put here by the test host
# harness (tests/testhost/rootfs.py); exec keeps the PID systemd watches.
exec {BORROWED_CADDY}/lib/ld-linux-x86-64.so.2 --library-path {BORROWED_CADDY}/lib {BORROWED_CADDY}/caddy "$@"
"""
#: Files a borrowed Caddy brings along besides the binary: its unit, its default
#: Caddyfile and the welcome page that Caddyfile serves.
CADDY_FILES: tuple[str, ...] = (
    "/lib/systemd/system/caddy.service",
    "/etc/caddy/Caddyfile",
    "/usr/share/caddy/index.html",
)


def release_of(name: str) -> Release:
    try:
        return RELEASES[name]
    except KeyError:
        raise TesthostError(f"no test host release {name!r}; known: {', '.join(RELEASES)}") from None


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


def mirror(suite: str = SUITE) -> str:
    """The Debian mirror this machine's apt uses: never a hard-coded host name.

    Preferably the one that serves `suite`; else the one serving this machine's own
    release (not its -security or -updates), whose archive has the others too.
    RECONCILER_TESTHOST_MIRROR_<SUITE> (for a release that moved to an archive
    mirror) and then RECONCILER_TESTHOST_MIRROR override it.
    """
    override = os.environ.get(f"RECONCILER_TESTHOST_MIRROR_{suite.upper()}") or os.environ.get(
        "RECONCILER_TESTHOST_MIRROR"
    )
    if override:
        return override
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        # deb822: stanzas separated by blank lines.
        stanzas = re.split(r"\n\s*\n", sources.read_text())
        candidates: list[tuple[int, str]] = []
        for stanza in stanzas:
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            uris = fields.get("uris", "").split()
            if uris and "deb" in fields.get("types", "deb").split():
                candidates.append((_suite_rank(fields.get("suites", "").split(), suite), uris[0]))
        if candidates:
            return min(candidates, key=lambda c: c[0])[1]  # the first of the best
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.exists():
        lines: list[tuple[int, str]] = []
        for line in sources_list.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                lines.append((_suite_rank([words[2]], suite), words[1]))
        usable = [candidate for candidate in lines if candidate[0] < 2]
        if usable:
            return min(usable, key=lambda c: c[0])[1]
    raise TesthostError(
        "cannot find a Debian mirror in /etc/apt/sources.list.d/debian.sources or "
        "/etc/apt/sources.list; set RECONCILER_TESTHOST_MIRROR"
    )


def _suite_rank(suites: list[str], wanted: str) -> int:
    """0: serves `wanted`; 1: serves this machine's own release; 2: anything else."""
    if wanted in suites:
        return 0
    return 1 if _machine_codename() in suites else 2


def _machine_codename() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return SUITE
    found = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", text, re.MULTILINE)
    return found.group(1) if found else SUITE


def recipe_hash(release: str = DEFAULT_RELEASE) -> str:
    """Hash of everything that determines the rootfs contents of `release`."""
    recipe = release_of(release)
    digest = hashlib.sha256()
    sources = [Path(__file__), Path(wheels.__file__)] if recipe.venv else [Path(__file__)]
    for source in sources:
        digest.update(source.read_bytes())
    parts: dict[str, object] = {
        "suite": recipe.codename,
        "packages": recipe.packages,
        "masked": MASKED_UNITS,
        "disabled": recipe.disabled,
    }
    if recipe.venv:
        parts["requirements"] = wheels.runtime_requirements()
    if recipe.caddy_from:
        parts["caddy_from"] = recipe_hash(recipe.caddy_from)  # a new donor, a new Caddy
    digest.update(json.dumps(parts, sort_keys=True).encode())
    return digest.hexdigest()


def cache_entry(stamp: str | None = None, release: str = DEFAULT_RELEASE) -> Path:
    """Directory holding rootfs/, wheels/ and manifest.json for one release's recipe."""
    return cache_dir() / f"rootfs-{release}-{(stamp or recipe_hash(release))[:16]}"


def entry_release(entry: Path) -> str:
    """The release a cache entry (or its trash) was built for, from its name. Entries named
    before there were several releases (rootfs-<hash>) are bookworm's."""
    name = entry.name.removeprefix(".trash-").removeprefix("rootfs-")
    release = name.split("-", 1)[0]
    return release if release in RELEASES else DEFAULT_RELEASE


def ensure_rootfs(release: str = DEFAULT_RELEASE, *, force: bool = False) -> Path:
    """Return the cached rootfs of `release` for the current recipe, building it if needed.

    Safe to call from several threads and several processes at once: the build
    runs under a lock file, and whoever waited on it finds the finished cache.
    A release that borrows Caddy makes sure the lender's rootfs exists first.
    """
    recipe = release_of(release)
    stamp = recipe_hash(release)
    entry = cache_entry(stamp, release)
    if not force and _is_complete(entry):
        return entry / "rootfs"
    # Before taking the build lock: ensuring the lender may build it under the same lock.
    lender = ensure_rootfs(recipe.caddy_from) if recipe.caddy_from else None
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
        building = cache_dir() / f".build-{release}-{stamp[:16]}-{os.getpid()}"
        _build(building, stamp, recipe, lender)
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


def _build(building: Path, stamp: str, recipe: Release, lender: Path | None) -> None:
    """Build a complete cache entry in `building` (removed again on failure)."""
    rootfs = building / "rootfs"
    wheel_dir = building / "wheels"
    building.mkdir(parents=True)
    try:
        requirements = wheels.runtime_requirements() if recipe.venv else []
        # The wheel download needs only the network, debootstrap mostly the
        # disk: run them side by side to shorten a cold build.
        with ThreadPoolExecutor(max_workers=1) as pool:
            wheel_job: Future[list[str]] | None = (
                pool.submit(wheels.download, wheel_dir, requirements, building / "pip-download.log")
                if recipe.venv
                else None
            )
            source = mirror(recipe.codename)
            started = time.monotonic()
            _debootstrap(rootfs, recipe, source, building / "debootstrap.log")
            log.info("debootstrap took %.1f s", time.monotonic() - started)
            wheel_files = wheel_job.result() if wheel_job else []
        _apply_fixups(rootfs, recipe)
        manifest: dict[str, object] = {
            "recipe_hash": stamp,
            "suite": recipe.codename,
            "mirror": source,
            "packages": recipe.packages,
            "python": _run_inside(rootfs, ["/usr/bin/python3", "--version"]),
            "systemd": _run_inside(rootfs, ["systemctl", "--version"]).splitlines()[0],
        }
        if lender is not None:
            manifest["caddy"] = _borrow_caddy(rootfs, lender)
            manifest["caddy_from"] = str(lender)
        if recipe.venv:
            started = time.monotonic()
            _install_venv(rootfs, wheel_dir, requirements, building / "venv.log")
            log.info("venv install took %.1f s", time.monotonic() - started)
            manifest.update(requirements=requirements, wheels=wheel_files)
        # debootstrap keeps the downloaded .debs: ~100 MB nobody needs.
        for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        manifest["built_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        (building / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    except BaseException:
        _remove_tree(building)
        raise


def _debootstrap(rootfs: Path, recipe: Release, source: str, log_path: Path) -> None:
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(recipe.packages)}",
        recipe.codename,
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


def _run_inside(rootfs: Path, argv: list[str]) -> str:
    """Run a program of the rootfs in a chroot; its stdout, stripped."""
    return run(["chroot", rootfs, *argv], env=CHROOT_ENV, timeout=60).stdout.decode().strip()


def _apply_fixups(rootfs: Path, recipe: Release) -> None:
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
    _write(rootfs, "/etc/ssh/sshd_config.d/50-reconciler-testhost.conf", SSHD_CONFIG)
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
    if recipe.disabled:
        run(["chroot", rootfs, "systemctl", "disable", *recipe.disabled], env=CHROOT_ENV)
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
    if recipe.podman:
        # Podman's storage (/var/lib/containers) is not set up here: every boot
        # bind-mounts its own empty directory there (nspawn.argv).
        _write(rootfs, "/etc/containers/containers.conf", CONTAINERS_CONF)
    if recipe.docker:
        # Docker's storage (/var/lib/docker) is bound in per boot, like Podman's.
        _write(rootfs, "/etc/docker/daemon.json", DOCKER_DAEMON_JSON)


def _borrow_caddy(rootfs: Path, lender: Path) -> str:
    """Install the lender's Caddy: its binary with the loader and libraries it links
    against, its unit (enabled), default Caddyfile and welcome page, and the caddy user
    and group its package's postinst makes. Returns `caddy version`, run inside."""
    home = rootfs / BORROWED_CADDY.lstrip("/")
    (home / "lib").mkdir(parents=True)
    shutil.copy2(lender / "usr/bin/caddy", home / "caddy")
    # ldd of the lender, in the lender: the loader and every library, by the name
    # the binary asks for (their real files, not the symlinks).
    linked = run(["chroot", lender, "ldd", "/usr/bin/caddy"], env=CHROOT_ENV, timeout=60).stdout.decode()
    for line in linked.splitlines():
        words = line.split()
        path = words[2] if len(words) >= 3 and words[1] == "=>" else words[0] if words else ""
        if not path.startswith("/"):
            continue  # linux-vdso.so.1 is the kernel's
        real = _run_inside(lender, ["readlink", "-f", path])  # links resolved inside the lender
        shutil.copy2(lender / real.lstrip("/"), home / "lib" / Path(path).name)
    if not (home / "lib/ld-linux-x86-64.so.2").is_file():
        raise TesthostError(f"no ld-linux-x86-64.so.2 in `ldd /usr/bin/caddy` of {lender}:\n{linked}")
    _write(rootfs, "/usr/bin/caddy", CADDY_WRAPPER, 0o755)
    for path in CADDY_FILES:
        _write(rootfs, path, (lender / path.lstrip("/")).read_text())
    steps = [
        ["groupadd", "--system", "caddy"],
        [
            "useradd", "--system", "--gid", "caddy", "--create-home", "--home-dir", "/var/lib/caddy",
            "--shell", "/usr/sbin/nologin", "--comment", "Caddy web server", "caddy",
        ],
        ["install", "-d", "-o", "caddy", "-g", "caddy", "/var/log/caddy"],
        ["systemctl", "enable", "caddy.service"],
    ]  # fmt: skip
    for argv in steps:
        run(["chroot", rootfs, *argv], env=CHROOT_ENV)
    return _run_inside(rootfs, ["/usr/bin/caddy", "version"])


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
    """Delete cache entries of older recipes of the same release unless a running host
    still uses them."""
    in_use = lowerdirs_in_use()
    release = entry_release(keep)
    for entry in [*cache_dir().glob("rootfs-*"), *cache_dir().glob(".trash-rootfs-*")]:
        if entry == keep or not entry.is_dir() or entry_release(entry) != release:
            continue
        if entry / "rootfs" in in_use:
            log.info("keeping %s: a running host still boots from it", entry)
            continue
        log.info("removing outdated cache entry %s", entry)
        shutil.rmtree(entry)
