"""The README's server install on the server the product runs on: Ubuntu 22.04, python3 3.10,
no network. tests/test_install_bullseye.py's test, on a jammy host: the built wheel and its
dependencies' wheels (for cp310) carried in, installed with examples/systemd's own venv and pip
line, and that unit running watch mode, following a git repository on the server: a pushed
bump is served, a pushed revert brings the old release back, rewritten history is refused."""

from __future__ import annotations

import pytest

from tests import test_install_bullseye

pytestmark = [pytest.mark.testhost, pytest.mark.slow]

TESTHOST_RELEASE = "jammy"

server = test_install_bullseye.server
test_installed_from_wheels_watch_mode_deploys_pushes_on_the_servers_python = (
    test_install_bullseye.test_installed_from_wheels_watch_mode_deploys_pushes_on_the_servers_python
)
