"""The one exception type the harness raises, so callers can catch harness trouble
separately from failures of the code under test."""

from __future__ import annotations


class TesthostError(RuntimeError):
    """A test host could not be built, booted, reached or torn down.

    The message is meant to be read by a person in a failing test run: it says what
    was attempted and carries the relevant output (command stderr, nspawn log tail).
    """

    __test__ = False  # its name starts with "Test": keep pytest from collecting it
