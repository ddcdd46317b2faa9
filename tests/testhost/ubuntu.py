"""Ubuntu root filesystems for test hosts: jammy (Ubuntu 22.04 LTS: python3 3.10, systemd 249).

Apart from rootfs.py on purpose: rootfs.py's source is part of every Debian release's recipe
hash, so a release added there would rebuild every cache. A jammy rootfs is made with the same
fix-ups and the same borrowed Caddy as bullseye (rootfs._apply_fixups, rootfs._borrow_caddy),
so its recipe hash covers rootfs.py as well as this file and the archive keyring.

What differs from a Debian release:

- the mirror is Ubuntu's (RECONCILER_TESTHOST_MIRROR_JAMMY, else http://archive.ubuntu.com/ubuntu),
  and Release files are checked against the Ubuntu archive keyring kept next to this file
  (Debian 12 ships debootstrap's jammy script but not that keyring);
- components main and universe, as an Ubuntu server has them (python3-venv is in universe);
- the packages of jammy-updates and jammy-security, installed by apt inside after debootstrap
  (which takes one suite), so a host runs what an Ubuntu 22.04 server that ran
  `apt upgrade` runs (python3 3.10.12, not the 3.10.4 jammy was released with).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from tests.testhost import preflight, rootfs
from tests.testhost.commands import run, tail_file
from tests.testhost.errors import TesthostError
from tests.testhost.layout import cache_dir

DEFAULT_MIRROR = "http://archive.ubuntu.com/ubuntu"
#: /usr/share/keyrings/ubuntu-archive-keyring.gpg of Debian's ubuntu-keyring 2023.11.28.1-0.2
#: (trixie; bookworm has no such package), byte for byte: the Ubuntu Archive Automatic
#: Signing Keys 2012 (790B C727 7767 219C 42C8 6F93 3B4F E6AC C0B2 1F32) and 2018
#: (F6EC B376 2474 EDA9 D21B 7022 8719 20D1 991B C93C), which signs jammy's Release files.
KEYRING = Path(__file__).with_name("ubuntu-archive-keyring.gpg")
COMPONENTS = ("main", "universe")
#: Installed over the release pocket by apt inside the new rootfs.
POCKETS = ("updates", "security")

#: The bullseye host's packages (rootfs.BULLSEYE_PACKAGES: the agent runs on the system's
#: python3, the README's server install needs python3-venv and git) and sudo, for a deploy
#: login that is not root. Caddy is borrowed from bookworm, as for bullseye: jammy's archive
#: has no caddy package.
JAMMY_PACKAGES: tuple[str, ...] = (*rootfs.BULLSEYE_PACKAGES, "sudo")
#: Ubuntu's base-files ships a timer that fetches news for the login banner.
MASKED_UNITS: tuple[str, ...] = ("motd-news.timer", "motd-news.service")

JAMMY = rootfs.Release("jammy", JAMMY_PACKAGES, caddy_from="bookworm")
RELEASES: dict[str, rootfs.Release] = {"jammy": JAMMY}

# Known to rootfs.py's bookkeeping too (release_of, and entry_release, which tells a cache
# entry's release by its name: without this a Debian build would take rootfs-jammy-* for an
# outdated bookworm entry and remove it). Built only by ensure_rootfs below.
for _name, _release in RELEASES.items():
    rootfs.RELEASES.setdefault(_name, _release)


def mirror(release: str = "jammy") -> str:
    return os.environ.get(f"RECONCILER_TESTHOST_MIRROR_{release.upper()}") or DEFAULT_MIRROR


def recipe_hash(release: str = "jammy") -> str:
    """Hash of everything that determines the rootfs of an Ubuntu release."""
    recipe = RELEASES[release]
    digest = hashlib.sha256()
    for source in (Path(rootfs.__file__), Path(__file__), KEYRING):
        digest.update(source.read_bytes())
    parts: dict[str, object] = {
        "suite": recipe.codename,
        "components": COMPONENTS,
        "pockets": POCKETS,
        "packages": recipe.packages,
        "masked": (*rootfs.MASKED_UNITS, *MASKED_UNITS),
        "caddy_from": rootfs.recipe_hash(recipe.caddy_from) if recipe.caddy_from else None,
    }
    digest.update(json.dumps(parts, sort_keys=True).encode())
    return digest.hexdigest()


def cache_entry(release: str = "jammy") -> Path:
    return rootfs.cache_entry(recipe_hash(release), release)


def ensure_rootfs(release: str = "jammy", *, force: bool = False) -> Path:
    """The cached rootfs of an Ubuntu release, built if needed (as rootfs.ensure_rootfs does
    for Debian's: under the same lock, renamed into place only when complete)."""
    recipe = RELEASES[release]
    stamp = recipe_hash(release)
    entry = rootfs.cache_entry(stamp, release)
    if not force and rootfs._is_complete(entry):
        return entry / "rootfs"
    lender = rootfs.ensure_rootfs(recipe.caddy_from) if recipe.caddy_from else None
    preflight.check(build=True)
    with rootfs._build_lock, rootfs._locked(cache_dir() / ".build.lock"):
        if not force and rootfs._is_complete(entry):
            return entry / "rootfs"
        if force and entry / "rootfs" in rootfs.lowerdirs_in_use():
            raise TesthostError(f"{entry} is in use by running test hosts; stop them before `build --force`")
        rootfs._remove_stale_builds()
        started = time.monotonic()
        building = cache_dir() / f".build-{release}-{stamp[:16]}-{os.getpid()}"
        _build(building, stamp, recipe, lender)
        rootfs._replace(entry, building)
        rootfs.log.info("built %s in %.1f s", entry, time.monotonic() - started)
        rootfs._remove_unused_entries(keep=entry)
    return entry / "rootfs"


def _build(building: Path, stamp: str, recipe: rootfs.Release, lender: Path | None) -> None:
    tree = building / "rootfs"
    building.mkdir(parents=True)
    try:
        source = mirror(recipe.name)
        timings: dict[str, float] = {}
        started = time.monotonic()
        _debootstrap(tree, recipe, source, building / "debootstrap.log")
        timings["debootstrap"] = time.monotonic() - started
        started = time.monotonic()
        _upgrade(tree, recipe, source, building / "upgrade.log")
        timings["upgrade"] = time.monotonic() - started
        rootfs._apply_fixups(tree, recipe)
        system = tree / "etc/systemd/system"
        for wants_link in system.glob("*.wants/*"):
            if wants_link.name in MASKED_UNITS:
                wants_link.unlink()
        for unit in MASKED_UNITS:
            (system / unit).unlink(missing_ok=True)
            (system / unit).symlink_to("/dev/null")
        manifest: dict[str, object] = {
            "recipe_hash": stamp,
            "suite": recipe.codename,
            "pockets": [recipe.codename, *(f"{recipe.codename}-{p}" for p in POCKETS)],
            "components": COMPONENTS,
            "mirror": source,
            "packages": recipe.packages,
            "python": rootfs._run_inside(tree, ["/usr/bin/python3", "--version"]),
            "systemd": rootfs._run_inside(tree, ["systemctl", "--version"]).splitlines()[0],
        }
        if lender is not None:
            started = time.monotonic()
            manifest["caddy"] = rootfs._borrow_caddy(tree, lender)
            manifest["caddy_from"] = str(lender)
            timings["caddy"] = time.monotonic() - started
        # The downloaded .debs, the package lists and apt's caches of them: ~500 MB nobody
        # needs (hosts have no route to a mirror anyway).
        shutil.rmtree(tree / "var/cache/apt/archives", ignore_errors=True)
        (tree / "var/cache/apt/archives/partial").mkdir(parents=True)
        for cached in [*(tree / "var/lib/apt/lists").glob("*"), *(tree / "var/cache/apt").glob("*.bin")]:
            if cached.is_file():
                cached.unlink()
        manifest["timings_s"] = {step: round(seconds, 1) for step, seconds in timings.items()}
        manifest["built_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        (building / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    except BaseException:
        rootfs._remove_tree(building)
        raise


def _debootstrap(tree: Path, recipe: rootfs.Release, source: str, log_path: Path) -> None:
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--components={','.join(COMPONENTS)}",
        f"--keyring={KEYRING}",
        f"--include={','.join(recipe.packages)}",
        recipe.codename,
        str(tree),
        source,
    ]
    _logged(argv, log_path, "debootstrap")


def _upgrade(tree: Path, recipe: rootfs.Release, source: str, log_path: Path) -> None:
    """jammy-updates and jammy-security over what debootstrap installed from jammy, with the
    keyring apt inside has from the ubuntu-keyring package debootstrap installed."""
    lines = [
        f"deb {source} {suite} {' '.join(COMPONENTS)}"
        for suite in (recipe.codename, *(f"{recipe.codename}-{p}" for p in POCKETS))
    ]
    (tree / "etc/apt/sources.list").write_text("\n".join(lines) + "\n")
    script = "apt-get update -qq && apt-get -y -qq -o Dpkg::Options::=--force-confold dist-upgrade"
    _logged(["chroot", str(tree), "sh", "-c", script], log_path, "upgrading from the updates pockets")


def _logged(argv: list[str], log_path: Path, what: str) -> None:
    env = {**rootfs.CHROOT_ENV, "DEBIAN_FRONTEND": "noninteractive"}
    result = run(argv, env=env, timeout=1200, check=False)
    log_path.write_bytes(result.stdout + result.stderr)
    if result.returncode != 0:
        raise TesthostError(
            f"{what} failed (rc={result.returncode}): {' '.join(argv)}\n{tail_file(log_path)}"
        )
