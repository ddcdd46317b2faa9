"""The app's routes, private paths and static frontend settings: how the file names them, the
checks that refuse what cannot work, and the Caddy fragment each setting renders. What Caddy
does with that fragment is tested on a real host in tests/test_frontend_routes.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.errors import InvalidDesiredState
from reconciler.plan.config import fingerprint
from reconciler.plan.proxy import render_fragment
from reconciler.spec import paths
from reconciler.spec.load import load_bytes

BASE = """\
app: choiros
target: local
release: {version: "1.0.0", source: dist}
backend:
  command: bin/backend --port {port}
  port: 8080
"""


def load(extra: str = ""):  # type: ignore[no-untyped-def]
    return load_bytes((BASE + extra).encode(), "desired-state.yaml", base_dir=Path("/"))


def problems(extra: str) -> list[tuple[str, int | None, int | None, str]]:
    with pytest.raises(InvalidDesiredState) as caught:
        load(extra)
    return [(p.field, p.line, p.column, f"{p.message}; {p.hint}") for p in caught.value.problems]


# --- Caddy's path patterns --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        ("/ws", "/ws", True),
        ("/ws", "/ws/", False),
        ("/ws", "/wsx", False),
        ("/ws", "/WS", True),  # Caddy matches paths ignoring case
        ("/api/*", "/api/", True),
        ("/api/*", "/api/notes/1", True),
        ("/api/*", "/api", False),
        ("/auth*", "/auth", True),
        ("/auth*", "/authx/y", True),
        ("/index-*.js", "/index-3f9a.js", True),
        ("/index-*.js", "/index-a/b.js", False),  # a '*' inside never crosses a '/'
        ("/index-*.js", "/index-.js", True),
        ("/*", "/anything/at/all", True),
    ],
)
def test_patterns_match_as_caddy_matches_them(pattern: str, path: str, hit: bool) -> None:
    # The same table was requested through Caddy 2.6.2 on a test host (test_frontend_routes).
    assert paths.matches(pattern, path) is hit


@given(st.from_regex(r"/[a-z0-9._-]{0,12}", fullmatch=True))
def test_an_exact_pattern_matches_only_its_own_path(path: str) -> None:
    assert paths.matches(path, path)
    assert not paths.matches(path, path + "x") and not paths.matches(path, path + "/")


# --- the file ---------------------------------------------------------------------------------


def test_defaults_route_api_to_the_backend_and_cache_assets() -> None:
    d = load()
    assert d.proxy.backend_paths == ("/api/*",) and d.proxy.private_paths == ()
    assert d.frontend.spa is False and d.frontend.immutable_paths == ("/assets/*",)
    assert d.health.version_at is None


def test_settings_are_read() -> None:
    d = load(
        "proxy: {backend_paths: [/api/*, /ws], private_paths: [/metrics]}\n"
        "frontend: {spa: true, immutable_paths: [/assets/*, /index-*.js]}\n"
        "health: {version_at: {json: datasette.version}}\n"
    )
    assert d.proxy.backend_paths == ("/api/*", "/ws") and d.proxy.private_paths == ("/metrics",)
    assert d.frontend.spa and d.frontend.immutable_paths == ("/assets/*", "/index-*.js")
    assert d.health.version_at == ("json", "datasette.version")


@pytest.mark.parametrize(
    ("extra", "field", "line", "column", "words"),
    [
        ("proxy: {backend_paths: [api/*]}\n", "proxy.backend_paths[0]", 7, 25, "a request path such as /ws"),
        ("proxy: {backend_paths: ['/a/*/b/*']}\n", "proxy.backend_paths[0]", 7, 25, "at most one '*'"),
        ("proxy: {backend_paths: ['/{path}']}\n", "proxy.backend_paths[0]", 7, 25, "a request path"),
        ("proxy: {backend_paths: [/ws, /ws]}\n", "proxy.backend_paths[1]", 7, 30, '"/ws" is listed twice'),
        (
            "proxy: {private_paths: [/he*]}\n",
            "proxy.private_paths[0]",
            7,
            25,
            "hides the health path /health",
        ),
        (
            "proxy: {backend_paths: [/metrics], private_paths: [/metrics]}\n",
            "proxy.private_paths[0]",
            7,
            52,
            "also in proxy.backend_paths",
        ),
        ("frontend: {immutable_paths: ['/*']}\n", "frontend.immutable_paths[0]", 7, 30, "matches /:"),
        (
            "frontend: {immutable_paths: [/index.html]}\n",
            "frontend.immutable_paths[0]",
            7,
            30,
            "matches /index.html",
        ),
        ("frontend: {spa: yes please}\n", "frontend.spa", 7, 17, "true or false"),
        ("health: {version_at: {json: a..b}}\n", "health.version_at.json", 7, 29, "a dotted path"),
        (
            "health: {version_at: {header: 'X Version'}}\n",
            "health.version_at.header",
            7,
            31,
            "an HTTP header name",
        ),
        ("health: {version_at: {json: a, header: B}}\n", "health.version_at", 7, 10, "{json: a.dotted.path}"),
        (
            "health: {version_at: {text: a}}\n",
            "health.version_at.text",
            7,
            23,
            "unknown field; allowed here: header, json",
        ),
    ],
)
def test_bad_settings_are_refused_at_their_position(
    extra: str, field: str, line: int, column: int, words: str
) -> None:
    found = problems(extra)
    assert any(f == field and (ln, col) == (line, column) and words in m for f, ln, col, m in found), found


def test_new_settings_leave_the_configuration_fingerprint_as_it_was() -> None:
    # Files written before these settings existed keep their fingerprint, so upgrading the
    # reconciler restarts nothing; only naming where the version is makes a new configuration.
    plain = fingerprint(load())
    assert (
        fingerprint(load("frontend: {spa: true, immutable_paths: []}\nproxy: {backend_paths: [/ws]}\n"))
        == plain
    )
    assert fingerprint(load("health: {version_at: {header: X-Version}}\n")) != plain


# --- the fragment -----------------------------------------------------------------------------


def fragment(extra: str = "", **kw: object) -> str:
    return render_fragment(load(extra), 8080, "/opt/choiros/releases/1.0.0/frontend/dist", **kw)  # type: ignore[arg-type]


def test_default_fragment() -> None:
    assert fragment() == (
        "# Managed by reconciler (choiros): edits here are reverted on the next run.\n"
        "# claims: site=:80 ports=8080\n"
        ":80 {\n"
        "\tencode gzip\n"
        "\t@backend path /health /api/*\n"
        "\thandle @backend {\n"
        "\t\treverse_proxy 127.0.0.1:8080 {\n"
        "\t\t\tlb_try_duration 5s\n"
        "\t\t\tlb_try_interval 100ms\n"
        "\t\t}\n"
        "\t}\n"
        "\t@immutable path /assets/*\n"
        "\thandle @immutable {\n"
        "\t\troot * /opt/choiros/releases/1.0.0/frontend/dist\n"
        "\t\t@exists file\n"
        '\t\theader @exists Cache-Control "public, max-age=31536000, immutable"\n'
        "\t\tfile_server {\n"
        "\t\t\tprecompressed br zstd gzip\n"
        "\t\t}\n"
        "\t}\n"
        "\thandle {\n"
        "\t\troot * /opt/choiros/releases/1.0.0/frontend/dist\n"
        '\t\theader Cache-Control "no-cache"\n'
        "\t\tfile_server {\n"
        "\t\t\tprecompressed br zstd gzip\n"
        "\t\t}\n"
        "\t}\n"
        "}\n"
    )


def test_routes_private_paths_and_spa() -> None:
    text = fragment(
        "proxy: {backend_paths: [/api/*, /ws, /health], private_paths: [/metrics, /api/internal/*]}\n"
        "frontend: {spa: true, immutable_paths: []}\n"
    )
    assert "\t@private path /metrics /api/internal/*\n\thandle @private {\n\t\trespond 404\n\t}\n" in text
    assert "\t@backend path /health /api/* /ws\n" in text, "the health path once, first"
    assert text.index("@private") < text.index("@backend"), "private paths are tried first"
    assert "@immutable" not in text
    assert "\t\ttry_files {path} /index.html\n" in text


def test_maintenance_keeps_private_paths_and_only_the_health_path() -> None:
    text = fragment(
        "proxy: {backend_paths: [/ws], private_paths: [/metrics]}\nfrontend: {spa: true}\n", maintenance=True
    )
    assert "\t@backend path /health\n" in text and "/ws" not in text
    assert "@private path /metrics" in text
    assert "try_files" not in text and "@immutable" not in text and " 503" in text


def test_dev_server_mode_has_routes_but_no_static_settings() -> None:
    text = fragment(
        "frontend: {mode: dev-server, dev_command: bin/frontend-dev, dev_port: 3000, spa: true}\n"
        "proxy: {backend_paths: [/ws]}\n"
    )
    assert "\t@backend path /health /ws\n" in text and "reverse_proxy 127.0.0.1:3000" in text
    assert "try_files" not in text and "file_server" not in text and "Cache-Control" not in text
