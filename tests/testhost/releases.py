"""Every release a test host can boot: Debian's (rootfs.py) and Ubuntu's (ubuntu.py).

The rest of the harness asks here for a release's rootfs and cache entry, so each is built by
the module that knows its recipe."""

from __future__ import annotations

from pathlib import Path

from tests.testhost import rootfs, ubuntu
from tests.testhost.rootfs import DEFAULT_RELEASE, Release


def names() -> list[str]:
    return [*dict.fromkeys([*rootfs.RELEASES, *ubuntu.RELEASES])]


def release_of(name: str) -> Release:
    return ubuntu.RELEASES[name] if name in ubuntu.RELEASES else rootfs.release_of(name)


def ensure_rootfs(release: str = DEFAULT_RELEASE, *, force: bool = False) -> Path:
    """The cached rootfs of `release` for its current recipe, built if needed."""
    if release in ubuntu.RELEASES:
        return ubuntu.ensure_rootfs(release, force=force)
    return rootfs.ensure_rootfs(release, force=force)


def cache_entry(release: str = DEFAULT_RELEASE) -> Path:
    if release in ubuntu.RELEASES:
        return ubuntu.cache_entry(release)
    return rootfs.cache_entry(release=release)
