"""Which health answers name a release's version (reconciler/agent/version.py, run by the
agent's gate): where real apps put it, and never a different version that merely contains
it. The gate on a real host, with a Datasette-shaped answer, is in tests/test_frontend_routes.py."""

from __future__ import annotations

import json

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from reconciler.agent.version import miss, names_version

DATASETTE = {
    "python": {"version": "3.11.2", "full": "3.11.2 (main, ...) [GCC 12.2.0]"},
    "datasette": {"version": "0.64.8"},
    "asgi": "3.0",
    "uvicorn": "0.30.6",
    "sqlite": {"version": "3.40.1", "fts_versions": ["FTS5", "FTS4"], "extensions": {"json1": None}},
}


def names(
    body: object, version: str, headers: list[tuple[str, str]] | None = None, at: dict[str, str] | None = None
) -> bool:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return names_version(raw, headers or [], version, at)


@pytest.mark.parametrize(
    ("body", "headers", "version", "at", "expected"),
    [
        # Datasette's /-/versions.json, with expect_version: true and nothing else said.
        (DATASETTE, [], "0.64.8", None, True),
        (DATASETTE, [], "0.64.7", None, False),
        (DATASETTE, [], "3.11.2", None, True),  # any place counts without version_at...
        (DATASETTE, [], "3.11.2", {"json": "datasette.version"}, False),  # ...only that one with it
        (DATASETTE, [], "0.64.8", {"json": "datasette.version"}, True),
        (DATASETTE, [], "0.64.8", {"json": "datasette.missing"}, False),
        ({"version": "1.4.2"}, [], "1.4.2", None, True),
        ({"status": "ok", "build": {"tag": "v1.4.2"}}, [], "1.4.2", None, True),
        ({"version": "1.4.2"}, [], "v1.4.2", None, True),
        ({"builds": [{"version": 7}]}, [], "7", {"json": "builds.0.version"}, True),
        ({"builds": [{"version": 7}]}, [], "7", None, False),  # numbers count only where named
        ({"version": "1.10"}, [], "1.1", None, False),
        ({"version": "1.1"}, [], "1.10", None, False),
        ({"status": "running 1.4.2"}, [], "1.4.2", None, False),  # a JSON string must be the version
        ("1.4.2", [], "1.4.2", None, True),  # a JSON string answer
        (b"1.10", [], "1.10", None, True),  # a bare number is text, not the float 1.1
        (b"1.10", [], "1.1", None, False),
        (b"ok choiros 1.4.2\n", [], "1.4.2", None, True),
        (b"datasette/0.64.8 python/3.11", [], "0.64.8", None, True),
        (b"version=1.4.2;", [], "1.4.2", None, True),
        (b"ok 1.4.20", [], "1.4.2", None, False),
        (b"ok 1.4.2-rc1", [], "1.4.2", None, False),
        (b"ok 21.4.2", [], "1.4.2", None, False),
        (b"ok 1.4.2.1", [], "1.4.2", None, False),
        (b"ok", [("X-App-Version", "1.4.2")], "1.4.2", None, True),
        (b"ok", [("Server", "choiros/1.4.2")], "1.4.2", None, False),  # headers that say "version"
        (b"ok", [("Content-Length", "2")], "2", None, False),
        (b"ok", [("Server", "choiros/1.4.2")], "1.4.2", {"header": "server"}, True),
        (b"ok 1.4.2", [("X-App-Version", "1.4.1")], "1.4.2", {"header": "X-App-Version"}, False),
    ],
)
def test_where_apps_put_their_version(
    body: object, headers: list[tuple[str, str]], version: str, at: dict[str, str] | None, expected: bool
) -> None:
    assert names(body, version, headers, at) is expected


def test_a_miss_says_what_the_answer_names_instead() -> None:
    body = json.dumps(DATASETTE).encode()
    assert miss(body, [], "0.65.0") == (
        "the answer does not name version 0.65.0 (it names python.version = '3.11.2', "
        "datasette.version = '0.64.8', sqlite.version = '3.40.1')"
    )
    assert miss(body, [], "0.65.0", {"json": "datasette.version"}) == (
        'its datasette.version is "0.64.8", not version 0.65.0'
    )
    assert miss(b"ok", [], "1", {"header": "X-App-Version"}) == "the answer has no X-App-Version header"
    assert miss(b"{}", [], "1", {"json": "a.b"}) == "the answer has no JSON field a.b"


# --- never a different version that merely contains this one -----------------------------------

versions = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,12}", fullmatch=True)
# What turns a version into another one that contains it.
affixes = st.from_regex(r"[A-Za-z0-9._+-]{1,4}", fullmatch=True)
keys = st.sampled_from(["version", "app", "build", "tag", "release", "name", "datasette"])


def _bare(v: str) -> str:
    return v[1:] if v[:1] in "vV" and v[1:2].isdigit() else v


@st.composite
def containing(draw: st.DrawFn) -> tuple[str, str]:
    """A version, and another one that contains it (and is not it, with or without a `v`)."""
    version = draw(versions)
    other = draw(affixes) * draw(st.booleans()) + version + draw(affixes) * draw(st.booleans())
    assume(_bare(other) != _bare(version) and len(other) > len(version))
    return version, other


@st.composite
def nested(draw: st.DrawFn, leaf: str) -> object:
    """A JSON document with `leaf` somewhere inside it, at any depth."""
    doc: object = leaf
    for _ in range(draw(st.integers(0, 4))):
        doc = {draw(keys): doc, "status": "ok"} if draw(st.booleans()) else ["x", doc]
    return doc


@given(containing(), st.data())
def test_never_a_different_version_that_merely_contains_it(
    pair: tuple[str, str], data: st.DataObject
) -> None:
    version, other = pair
    assert not names(data.draw(nested(other)), version)
    assert not names(f"ok {other}\n".encode(), version)
    assert not names(f"{{app}} {other}, up".encode(), version)
    assert not names(b"ok", version, [("X-App-Version", other)])
    assert not names({"a": {"version": other}}, version, at={"json": "a.version"})
    assert not names(b"ok", version, [("X-Build", f"app/{other}")], at={"header": "X-Build"})


@given(versions, st.data())
def test_the_version_itself_is_found_wherever_it_is(version: str, data: st.DataObject) -> None:
    assert names(data.draw(nested(version)), version)
    assert names(f"ok app/{version} up".encode(), version)
    assert names(b"ok", version, [("X-App-Version", version)])
    assert names({"a": [{"version": version}]}, version, at={"json": "a.0.version"})


# --- what the controller says when the version is never named ----------------------------------


def _desired(health: str = ""):  # type: ignore[no-untyped-def]
    from pathlib import Path

    from reconciler.spec.load import load_bytes

    text = (
        'app: choiros\ntarget: local\nrelease: {version: "0.64.8", source: dist}\n'
        "backend: {command: bin/backend, port: 8080, health: /-/versions.json}\n" + health
    )
    return load_bytes(text.encode(), "desired-state.yaml", base_dir=Path("/"))


def _error(desired, code: str, rolled_back: dict | None):  # type: ignore[no-untyped-def]
    from reconciler.engine.once import _failure_error
    from reconciler.plan.actions import CheckHealth, Plan

    gate = CheckHealth(
        "started", url="http://127.0.0.1:8080/-/versions.json", unit="u", timeout=1, interval=1, passes=1
    )
    failure = {"index": 0, "error": "never named it", "code": code, "on_failure": "quarantine"}
    return _failure_error(desired, Plan((gate,), ""), failure, rolled_back, None)


def test_the_error_says_how_to_name_the_place_and_promises_no_rollback_on_a_first_deploy() -> None:
    first = _error(_desired(), "version", {"ok": True, "to": None})
    assert type(first).__name__ == "HealthCheckFailed"
    assert first.hint.startswith("nothing was rolled back: no earlier release passed its gates")
    assert "health.version_at: {json: path.to.version} or {header: X-App-Version}" in first.hint
    assert "health.expect_version: false" in first.hint
    named = _error(
        _desired("health: {version_at: {json: python.version}}\n"), "version", {"ok": True, "to": None}
    )
    assert "Check that health.version_at (json: python.version)" in named.hint
    back = _error(_desired(), "version", {"ok": True, "to": "0.64.7"})
    assert type(back).__name__ == "RolledBack" and "rolled back to 0.64.7" in str(back)
    assert "health.version_at" in back.hint and "nothing was rolled back" not in back.hint
    unhealthy = _error(_desired(), "health", {"ok": True, "to": None})
    assert "version_at" not in unhealthy.hint, "only a version that was never named gets that hint"
