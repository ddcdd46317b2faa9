"""Fixtures for modules whose every test runs on a Podman host, then on a Docker host."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.testhost import TestHost, boot
from tests.testhost.rootfs import DEFAULT_RELEASE

RUNTIMES = {"podman": DEFAULT_RELEASE, "docker": "docker"}  # runtime -> the host release that has it


@pytest.fixture(scope="module", params=list(RUNTIMES))
def testhost(request: pytest.FixtureRequest) -> Iterator[TestHost]:
    """A Podman host, then a Docker host: every test of the module runs on each."""
    with boot(release=RUNTIMES[request.param]) as host:
        yield host


@pytest.fixture(scope="module")
def runtime(testhost: TestHost) -> str:
    return "docker" if testhost.release == "docker" else "podman"
