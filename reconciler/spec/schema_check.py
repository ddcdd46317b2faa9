"""Pass 2 of loading a desired state: the JSON Schema, its errors said in the user's terms.

Each jsonschema error becomes an InputProblem at the field's line: what was expected, what
was found, the closest known field name for a typo. jsonschema is imported only when a file
has to be checked, and a verdict for bytes that passed is cached (schema_problems_cached).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any, cast

from reconciler.errors import InputProblem
from reconciler.spec.synonyms import suggest
from reconciler.spec.yaml_source import SourceDoc, dotted

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema" / "desired-state.schema.json"


@cache
def schema() -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


def _validated_key(raw: bytes, target_override: str | None) -> str:
    digest = hashlib.sha256(SCHEMA_FILE.read_bytes())
    digest.update(b"\0" + raw + b"\0" + (target_override or "").encode())
    return digest.hexdigest()


def schema_problems_cached(
    doc: SourceDoc, raw: bytes, target_override: str | None, cache_dir: Path
) -> list[InputProblem]:
    """The schema pass, skipped when these exact bytes already passed this exact schema.

    Validating is deterministic, and importing jsonschema costs more than a whole local
    no-op run should take; a marker file per (schema, file) pair that passed is enough.
    """
    marker = cache_dir / _validated_key(raw, target_override)
    if marker.exists():
        return []
    problems = schema_problems(doc)
    if not problems:
        with contextlib.suppress(OSError):
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
    return problems


def schema_problems(doc: SourceDoc) -> list[InputProblem]:
    import jsonschema  # deferred: see schema_problems_cached

    validator = jsonschema.Draft202012Validator(schema())
    problems: list[InputProblem] = []
    for err in validator.iter_errors(doc.data):
        problems.extend(_explain(doc, err))
    return _dedupe(problems)


def _dedupe(problems: list[InputProblem]) -> list[InputProblem]:
    seen: set[InputProblem] = set()
    out = []
    for p in problems:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return json.dumps(shown)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _expected(err: Any) -> str:
    sub = err.schema if isinstance(err.schema, dict) else {}
    if "x-expected" in sub:
        return str(sub["x-expected"])
    if err.validator == "enum":
        return "one of " + ", ".join(str(v) for v in err.validator_value)
    if err.validator == "type":
        return {"object": "a mapping", "array": "a list", "integer": "a whole number"}.get(
            err.validator_value, f"a {err.validator_value}"
        )
    return str(err.message)


def _explain(doc: SourceDoc, err: Any) -> list[InputProblem]:
    path: tuple[str | int, ...] = tuple(err.absolute_path)
    kind = err.validator
    if kind == "required":
        have = err.instance if isinstance(err.instance, dict) else {}
        why = " (needed in dev-server mode)" if "then" in err.schema_path else ""
        # Located at the mapping that should hold the field: that is where it is added.
        where = f"under `{dotted(path)}:`" if path else "at the top level"
        return [
            doc.problem(
                (*path, name), f"missing required field {name!r}{why}", f"add `{name}:` {where}", at=path
            )
            for name in err.validator_value
            if name not in have
        ]
    if kind == "additionalProperties":
        known = sorted((err.schema.get("properties") or {}).keys())
        out = []
        for key in err.instance:
            if key in known:
                continue
            allowed = f"allowed here: {', '.join(known)}"
            guess = suggest(schema(), path, str(key))
            hint = f"{guess} ({allowed})" if guess else allowed
            out.append(doc.problem((*path, key), "unknown field", hint, key=True))
        return out
    if "propertyNames" in err.relative_schema_path:
        key = err.instance
        return [doc.problem((*path, key), f"bad name {key!r}", f"expected {_expected(err)}", key=True)]
    if kind == "if":
        return []  # the failing "then" branch reports the useful part
    if kind == "uniqueItems" and isinstance(err.instance, list):
        seen: list[Any] = []
        for i, item in enumerate(err.instance):
            if item in seen:
                return [doc.problem((*path, i), f"{_describe(item)} is listed twice; list it once")]
            seen.append(item)
    got = _describe(err.instance)
    if kind == "type" and "string" in str(err.validator_value) and isinstance(err.instance, (int, float)):
        return [
            doc.problem(
                path,
                f"expected {_expected(err)}; got {got}",
                "YAML read it as a number or boolean; put it in quotes",
            )
        ]
    return [doc.problem(path, f"expected {_expected(err)}; got {got}")]
