"""The desired-state loader: every hostile or broken file is refused with a message naming
the file, the line and the field; a hypothesis fuzzer checks nothing else ever escapes."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.errors import InputProblem, InvalidDesiredState
from reconciler.spec import schema_check
from reconciler.spec.load import load, load_bytes

REPO = Path(__file__).resolve().parent.parent
CORPUS = sorted((Path(__file__).parent / "corpus" / "invalid").glob("*.yaml"))
WARNINGS = sorted((Path(__file__).parent / "corpus" / "warnings").glob("*.yaml"))
SPECIAL = {"empty-file": ("the file is empty", "1:1 -")}


def expectation(path: Path) -> tuple[str, str]:
    """A corpus file's first two lines: `# expect: TEXT` (in the problem as printed) and
    `# at: LINE:COLUMN FIELD` (exactly where it is reported; `-` for the whole file)."""
    lines = path.read_bytes().split(b"\n", 2)
    if not lines[0].startswith(b"# expect: "):
        return SPECIAL[path.stem]
    expect = lines[0].decode("utf-8", "replace").removeprefix("# expect: ")
    return expect, lines[1].decode("utf-8", "replace").removeprefix("# at: ")


def located(problem: InputProblem) -> str:
    return f"{problem.line}:{problem.column} {problem.field or '-'}"


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 100 and len(WARNINGS) >= 10


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_every_corpus_file_is_refused_naming_file_position_and_field(path: Path) -> None:
    expect, at = expectation(path)
    with pytest.raises(InvalidDesiredState) as caught:
        load(path)
    text = str(caught.value)
    hits = [p for p in caught.value.problems if expect in str(p)]
    assert len(hits) == 1, text
    assert located(hits[0]) == at, text
    assert all(p.file == str(path) for p in caught.value.problems)
    assert text.count(str(path)) == len(caught.value.problems)
    assert "nothing was changed" in text


@pytest.mark.parametrize("path", WARNINGS, ids=[p.stem for p in WARNINGS])
def test_every_setting_that_does_nothing_is_a_located_warning(path: Path) -> None:
    """The file is used (a run would go ahead), and says once what does nothing, and where."""
    expect, at = expectation(path)
    desired = load(path)
    assert len(desired.warnings) == 1, desired.warnings
    warning = desired.warnings[0]
    assert warning.severity == "warning" and expect in str(warning), str(warning)
    assert located(warning) == at
    assert warning.hint, "a warning says what to do"


def test_huge_file_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"app: choiros\n" + b"# padding\n" * 200_000)
    with pytest.raises(InvalidDesiredState, match="at most"):
        load(path)


def test_missing_file_says_how_to_pass_one(tmp_path: Path) -> None:
    with pytest.raises(InvalidDesiredState, match="-f FILE"):
        load(tmp_path / "nope.yaml")


def test_all_problems_are_reported_at_once_with_line_and_column() -> None:
    text = (CORPUS[0].parent / "unknown-top-level.yaml").read_text()
    text = text.replace('version: "1.0.0"', 'version: "../x"').replace("  port: 8080", "  port: 0")
    with pytest.raises(InvalidDesiredState) as caught:
        load_bytes(text.encode(), "d.yaml", base_dir=Path("/"))
    fields = {p.field for p in caught.value.problems}
    assert {"release.version", "backend.port", "relase"} <= fields
    version = next(p for p in caught.value.problems if p.field == "release.version")
    assert (version.line, version.column) == (6, 12)


def test_unknown_field_suggests_the_close_one() -> None:
    with pytest.raises(InvalidDesiredState, match="did you mean 'sha256'"):
        load(CORPUS[0].parent / "unknown-in-release.yaml")


def test_verbatim_fields_keep_what_was_written() -> None:
    text = """
app: x
target: local
release: {version: 1.10, source: a}
backend: {command: bin/b, port: 8080}
env:
  DEBUG: yes
  MODE: 0755
  EMPTY:
"""
    d = load_bytes(text.encode(), "d.yaml", base_dir=Path("/srv"))
    assert d.release.version == "1.10"
    assert {v.name: v.value for v in d.env} == {"DEBUG": "yes", "MODE": "0755", "EMPTY": ""}
    assert d.release.source == Path("/srv/a")


def test_yaml_merge_keys_work() -> None:
    text = """
app: x
target: local
defaults: &d {command: bin/b, port: 8080}
"""
    # merge keys are plain YAML; the unknown `defaults` key is still reported
    with pytest.raises(InvalidDesiredState, match="defaults"):
        load_bytes(text.encode(), "d.yaml", base_dir=Path("/"))
    ok = """
app: x
target: local
release: {version: "1", source: a}
backend:
  <<: {command: bin/b --port 1, port: 8080}
  health: /up
"""
    assert load_bytes(ok.encode(), "d.yaml", base_dir=Path("/")).backend.health == "/up"


def test_repository_desired_state_is_valid() -> None:
    d = load(REPO / "desired-state.yaml")
    assert d.app == "choiros" and d.target.kind == "local"


def test_schema_is_a_valid_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema_check.schema())
    assert json.loads((REPO / "schemas" / "desired-state.schema.json").read_text())["$schema"].endswith(
        "2020-12/schema"
    )


def test_packaged_schema_is_the_repository_schema() -> None:
    assert (
        schema_check.SCHEMA_FILE.read_bytes() == (REPO / "schemas" / "desired-state.schema.json").read_bytes()
    )


def test_every_schema_field_is_documented() -> None:
    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for key, sub in (node.get("properties") or {}).items():
                assert "description" in sub or "$ref" in sub, f"{path}.{key} has no description"
                walk(sub, f"{path}.{key}")

    walk(schema_check.schema(), "")


# --- the fuzzer -------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["..", "../etc", "$(id)", "`id`", "a;b", "\n", "{port}", "1.10", "yes", "~"]),
)
keys = st.sampled_from(
    [
        "app",
        "target",
        "release",
        "version",
        "source",
        "strategy",
        "backend",
        "command",
        "port",
        "env",
        "frontend",
        "mode",
        "x",
    ]
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=6)),
    max_leaves=25,
)


def _only_refusals(raw: bytes) -> None:
    try:
        load_bytes(raw, "fuzz.yaml", base_dir=Path("/"))
    except InvalidDesiredState as exc:
        assert exc.problems and all(p.file == "fuzz.yaml" for p in exc.problems)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes(raw: bytes) -> None:
    _only_refusals(raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_fuzz_structured_documents(doc: object) -> None:
    _only_refusals(yaml.safe_dump(doc).encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_mutations_of_a_valid_file(data: st.DataObject) -> None:
    base = (REPO / "desired-state.yaml").read_text()
    lines = base.splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    mutation = data.draw(st.sampled_from(["delete", "duplicate", "replace", "truncate"]))
    if mutation == "delete":
        del lines[i]
    elif mutation == "duplicate":
        lines.insert(i, lines[i])
    elif mutation == "replace":
        lines[i] = data.draw(st.text(max_size=40))
    else:
        lines = lines[:i]
    _only_refusals("\n".join(lines).encode())


def test_schema_verdicts_are_cached_by_content_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = (REPO / "desired-state.yaml").read_bytes()
    calls: list[int] = []
    real = schema_check.schema_problems

    def counting(doc: object) -> list[object]:
        calls.append(1)
        return real(doc)  # type: ignore[arg-type]

    monkeypatch.setattr(schema_check, "schema_problems", counting)
    load_bytes(good, "a.yaml", base_dir=REPO, cache_dir=tmp_path)
    load_bytes(good, "b.yaml", base_dir=REPO, cache_dir=tmp_path)
    assert len(calls) == 1, "the same bytes were validated twice"
    bad = good.replace(b"port: 8080", b"port: 0")
    for _ in range(2):
        with pytest.raises(InvalidDesiredState, match="backend.port"):
            load_bytes(bad, "c.yaml", base_dir=REPO, cache_dir=tmp_path)
    assert len(calls) == 3, "a failing file must be validated every time"
    load_bytes(good, "d.yaml", base_dir=REPO, target_override="ssh://root@h", cache_dir=tmp_path)
    assert len(calls) == 4, "another target is another document"
    load_bytes(good, "e.yaml", base_dir=REPO)
    assert len(calls) == 5, "without a cache folder the schema always runs"
    assert len(list(tmp_path.iterdir())) == 2, "only passing documents leave a marker"
