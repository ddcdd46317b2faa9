"""Rendering units, env files and Caddyfiles, and the unit diff that decides restarts."""

from __future__ import annotations

import shlex

from hypothesis import given
from hypothesis import strategies as st

from reconciler.render import caddyfile, envfile, units
from reconciler.spec.model import EnvVar

SPEC = units.ServiceSpec(
    "app", "backend", ("bin/backend", "--port", "{port}"), "/opt/app/current", "/etc/app/b.env", port=8080
)


def test_relative_program_runs_from_the_release_and_port_is_substituted() -> None:
    text = units.render_service(SPEC)
    assert "ExecStart=/opt/app/current/bin/backend --port 8080\n" in text
    assert "Environment=PORT=8080\n" in text
    assert units.marker_of(text) == units.runtime_hash(text)


def test_exec_words_are_quoted_and_specifiers_escaped() -> None:
    line = units.exec_line(("python3", "-c", "print('a b')", "50%", "$HOME", 'say "hi"'), "/r")
    assert line == 'python3 -c "print(\'a b\')" 50%% $$HOME "say \\"hi\\""'


@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=12),
        min_size=1,
        max_size=5,
    )
)
def test_exec_quoting_round_trips_through_a_shell_like_split(words: list[str]) -> None:
    line = units.exec_line(tuple(words), "/r")
    unescaped = [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(line)]
    expected = [
        f"/r/{w.removeprefix('./')}" if i == 0 and "/" in w and not w.startswith("/") else w
        for i, w in enumerate(words)
    ]
    assert unescaped == expected


def test_classify_ignores_metadata_install_and_the_marker() -> None:
    old = units.render_service(SPEC)
    assert units.classify(old, old.replace("Description=app backend", "Description=x")) == units.UnitChange(
        ("Unit.Description",), restart=False, reenable=False
    )
    install = units.classify(old, old.replace("WantedBy=multi-user.target", "WantedBy=default.target"))
    assert install.reenable and not install.restart
    assert units.classify(old, old.replace("RestartSec=1s", "RestartSec=5s")).restart
    assert units.classify(old, "# a comment\n" + old).changed == ()


def test_runtime_hash_is_stable_under_reordering_of_keys() -> None:
    a = "[Service]\nExecStart=/x\nUser=u\n"
    b = "[Service]\nUser=u\nExecStart=/x\n"
    assert units.runtime_hash(a) == units.runtime_hash(b)
    assert units.runtime_hash(a) != units.runtime_hash(a.replace("/x", "/y"))


def test_env_file_quotes_every_value_and_reads_back() -> None:
    env = [EnvVar("B", 'q"uote $HOME `id` \\n back\\slash'), EnvVar("A", "plain"), EnvVar("E", "")]
    text = envfile.render("app", env, "c0ffee")
    lines = text.splitlines()
    assert lines[2].startswith("A=") and lines[3].startswith("B="), "sorted by name"
    parsed = envfile.parse(text)
    assert parsed["B"] == 'q"uote $HOME `id` \\n back\\slash' and parsed["E"] == ""
    assert envfile.config_of(text) == parsed[envfile.CONFIG_VAR] == "c0ffee"


def test_env_diff_names_keys_not_values() -> None:
    old = envfile.render("app", [EnvVar("TOKEN", "old-secret"), EnvVar("GONE", "x")], "c0ffee")
    assert envfile.changed_names(old, [EnvVar("TOKEN", "new-secret"), EnvVar("NEW", "1")]) == [
        "GONE",
        "NEW",
        "TOKEN",
    ]


def test_caddyfile_routes_api_and_health_to_backend_and_rest_to_files() -> None:
    text = caddyfile.render(
        caddyfile.Site("app", ":80", 8081, "/health", static_root="/opt/app/blue/dist", colour="blue")
    )
    assert caddyfile.routed_colour(text) == "blue"
    assert "\t@backend path /health /api/*\n\thandle @backend {\n\t\treverse_proxy 127.0.0.1:8081" in text
    assert "root * /opt/app/blue/dist" in text
    dev = caddyfile.render(caddyfile.Site("app", "example.com", 8080, "/up", frontend_port=3000))
    assert "reverse_proxy 127.0.0.1:3000" in dev and "file_server" not in dev
    assert caddyfile.routed_colour(dev) is None
