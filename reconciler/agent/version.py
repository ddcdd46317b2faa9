"""Does a health answer name the release version? (health.expect_version, health.version_at)

Apps put their version in many places: a top-level "version" key, a nested one (Datasette's
/-/versions.json answers {"datasette": {"version": "0.64.8"}, "python": {...}}), a header
such as X-App-Version, or a line of text. Without a named place every one of those counts.
What never counts is a different version that merely contains this one: 1.10 does not name
1.1, nor 1.1.5, 1.1-rc1 or 21.1. Versions are compared whole: a JSON string must equal it,
text and headers must carry it as a whole word (letters, digits and . _ + - around it are
part of the word). A leading `v` is not part of a version: v1.4.2 names 1.4.2 and back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any, Optional, Tuple

Headers = Sequence[Tuple[str, str]]

# What a version may be made of (the desired state's version pattern): a word of these.
_WORD = re.compile(r"[A-Za-z0-9._+-]+")
_MISSING = object()


def _bare(version: str) -> str:
    return version[1:] if version[:1] in ("v", "V") and version[1:2].isdigit() else version


def same(a: str, b: str) -> bool:
    return _bare(a) == _bare(b)


def in_text(text: str, version: str) -> bool:
    return any(same(word, version) for word in _WORD.findall(text))


def names_version(body: bytes, headers: Headers, version: str, at: Optional[dict[str, str]] = None) -> bool:
    """Whether this answer names `version`: at the place `at` names ({"json": "a.b"} or
    {"header": "X-App-Version"}), or, without one, anywhere it is found whole."""
    if at and "header" in at:
        return any(in_text(value, version) for value in header_values(headers, at["header"]))
    data = _json(body)
    if at and "json" in at:
        value = at_path(data, at["json"])
        return _scalar(value) is not None and same(str(_scalar(value)), version)
    if any(in_text(value, version) for name, value in headers if "version" in name.lower()):
        return True
    if data is _MISSING:
        return in_text(body.decode("utf-8", "replace"), version)
    return any(same(s, version) for _path, s in _strings(data))


def miss(body: bytes, headers: Headers, version: str, at: Optional[dict[str, str]] = None) -> str:
    """Why an answer does not name `version`, with what it names instead, in a few words."""
    if at and "header" in at:
        values = header_values(headers, at["header"])
        if not values:
            return f"the answer has no {at['header']} header"
        return f"its {at['header']} header is {values[0][:80]!r}, which does not name version {version}"
    data = _json(body)
    if at and "json" in at:
        value = at_path(data, at["json"])
        if value is _MISSING:
            return f"the answer has no JSON field {at['json']}"
        return f"its {at['json']} is {json.dumps(value)[:80]}, not version {version}"
    places = [f"header {n}: {v[:40]}" for n, v in headers if "version" in n.lower()]
    if data is not _MISSING:
        named = ((p, s) for p, s in _strings(data) if "version" in p.rsplit(".", 1)[-1].lower())
        places += [f"{p} = {s[:40]!r}" for p, s in named]
    said = f" (it names {', '.join(places[:3])})" if places else ""
    return f"the answer does not name version {version}{said}"


def header_values(headers: Headers, name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name.lower()]


def _json(body: bytes) -> Any:
    """The answer as JSON, when it is a JSON object, list or string; else _MISSING (a bare
    number such as `1.10` is text: as a float it would read 1.1)."""
    try:
        data = json.loads(body)
    except ValueError:
        return _MISSING
    return data if isinstance(data, (dict, list, str)) else _MISSING


def at_path(data: Any, path: str) -> Any:
    for key in path.split("."):
        if isinstance(data, dict) and key in data:
            data = data[key]
        elif isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        else:
            return _MISSING
    return data


def _scalar(value: Any) -> Optional[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _strings(data: Any, path: str = "") -> Iterator[Tuple[str, str]]:
    """Every string in a JSON document, with its dotted path."""
    if isinstance(data, str):
        yield path, data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _strings(value, f"{path}.{i}" if path else str(i))
