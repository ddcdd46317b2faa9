"""YAML syntax errors said in the user's terms, at the place the mistake is.

libyaml reports what its scanner met ("found character that cannot start any token",
"mapping values are not allowed in this context"), often on the line after the mistake. The
mistakes behind those messages are few (a tab, a missing `: `, a value that needs quotes, an
indentation off by a space, an unclosed quote or bracket): each is recognised from the text
around the mark and said plainly, with what to do. Anything else keeps the parser's words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml


@dataclass(frozen=True)
class Plain:
    line: int | None  # 1-based
    column: int | None
    message: str
    hint: str = ""


_QUOTE = 'put the value in quotes, e.g. key: "..."'


def explain(exc: yaml.MarkedYAMLError, text: str) -> Plain:
    lines = text.splitlines()
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or ""
    if mark is None:
        return Plain(None, None, f"YAML syntax error: {problem}")
    row, col = mark.line, mark.column
    line = lines[row] if row < len(lines) else ""
    at = line[col] if col < len(line) else ""

    tab = _tab(lines, row, col)
    if tab is not None:
        return tab
    quote = _unclosed_quote(lines, row)
    if quote is not None:
        return quote
    if "cannot start any token" in problem and at:
        return Plain(
            row + 1,
            col + 1,
            f"a value cannot start with {at!r} in YAML",
            f'put the value in quotes, e.g. "{line[col:].strip()}"',
        )
    if "mapping values are not allowed" in problem:
        return _stray_colon(lines, row, col)
    if "unexpected end of stream" in problem and "quoted scalar" in (exc.context or ""):
        opened = exc.context_mark
        where = (opened.line + 1, opened.column + 1) if opened else (row + 1, col + 1)
        return Plain(*where, "this quote is never closed", "end the value with the same quote it starts with")
    if "flow sequence" in (exc.context or "") or "flow mapping" in (exc.context or ""):
        opened = exc.context_mark
        bracket = "]" if "sequence" in (exc.context or "") else "}"
        where = (opened.line + 1, opened.column + 1) if opened else (row + 1, col + 1)
        what = "list" if bracket == "]" else "mapping"
        return Plain(
            *where,
            f"this {what} is never closed with {bracket!r}",
            f"close it on the same line, or if it is text (a command with {{port}}), {_QUOTE}",
        )
    if "undefined alias" in problem:
        return Plain(
            row + 1,
            col + 1,
            "a value starting with '*' refers to an anchor (&name) that is not defined above",
            _QUOTE,
        )
    if "unknown escape" in problem:
        return Plain(
            row + 1,
            col + 1,
            "an unknown backslash escape inside double quotes",
            "use single quotes, where a backslash is a backslash, or write \\\\ for each one",
        )
    if "document start" in problem:
        return Plain(
            row + 1,
            col + 1,
            "text after the end-of-document marker '...'",
            "remove the '...' line; a desired state is one document",
        )
    if "expected key" in problem or "<block end>" in problem:
        return _not_a_key(lines, row, col, exc)
    what = " ".join(x for x in (exc.context, problem) if x)
    return Plain(row + 1, col + 1, f"YAML syntax error: {what}")


def _tab(lines: list[str], row: int, col: int) -> Plain | None:
    """A tab at the mark, or anywhere in the indentation of the line, is the problem."""
    line = lines[row] if row < len(lines) else ""
    indent = line[: len(line) - len(line.lstrip(" \t"))]
    if "\t" in indent:
        return Plain(row + 1, indent.index("\t") + 1, "YAML does not allow tabs for indentation: use spaces")
    if col < len(line) and line[col] == "\t":
        return Plain(row + 1, col + 1, "YAML does not allow a tab here: use spaces")
    return None


_QUOTED_VALUE = re.compile(r"""^\s*(?:-\s+)?(?:[^\s"'#:][^:#]*:\s+)?(["'])""")


def _closes(rest: str, quote: str) -> bool:
    """Whether a value opened with `quote` ends within `rest` (the rest of its line)."""
    i = 0
    while i < len(rest):
        if quote == '"' and rest[i] == "\\":
            i += 2
            continue
        if rest[i] == quote:
            if quote == "'" and rest[i + 1 : i + 2] == "'":
                i += 2  # '' is a quote inside single quotes
                continue
            return True
        i += 1
    return False


def _unclosed_quote(lines: list[str], row: int) -> Plain | None:
    """A quoted value that does not end on its own line, at or above the error: YAML lets a
    quote run on to the next quote in the file, so the parser's complaint comes lines later."""
    for i in range(min(row, len(lines) - 1) + 1):
        found = _QUOTED_VALUE.match(lines[i])
        if found and not _closes(lines[i][found.end() :], found.group(1)):
            return Plain(
                i + 1,
                found.start(1) + 1,
                "this quote is not closed on its line",
                "end the value with the same quote it starts with",
            )
    return None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _previous(lines: list[str], row: int) -> int | None:
    """The last line before `row` that holds something other than a comment."""
    for i in range(row - 1, -1, -1):
        stripped = lines[i].strip()
        if stripped and not stripped.startswith("#"):
            return i
    return None


def _stray_colon(lines: list[str], row: int, col: int) -> Plain:
    line = lines[row] if row < len(lines) else ""
    before = line[:col]
    if ": " in before.lstrip(" -") or before.rstrip().endswith(":"):
        # `command: bin/x --flag: 3`: a second `: ` in a value reads as another key.
        return Plain(
            row + 1,
            col + 1,
            "a ': ' inside a value: YAML reads it as the start of another key",
            _QUOTE,
        )
    prev = _previous(lines, row)
    if prev is not None:
        above = lines[prev].split(" #", 1)[0].rstrip()
        body = above.lstrip(" ").removeprefix("- ")
        if ":" not in body and not body.startswith(("{", "[", '"', "'")):
            # `  version 1` then `  source: x`: the line without its colon is the mistake.
            return Plain(
                prev + 1,
                _indent(above) + 1,
                f"{body.split()[0]!r} has no ':' after it",
                "write `key: value`, with a space after the colon",
            )
        if _indent(line) > _indent(above) and not above.endswith(":"):
            key = body.split(":", 1)[0]
            return Plain(
                row + 1,
                _indent(line) + 1,
                f"indented more than the line above, but {key!r} there already has a value",
                f"line it up with {key!r} (column {_indent(above) + 1})",
            )
    return Plain(
        row + 1, col + 1, "a ':' where YAML does not expect one", f"if it is part of a value, {_QUOTE}"
    )


def _not_a_key(lines: list[str], row: int, col: int, exc: yaml.MarkedYAMLError) -> Plain:
    line = lines[row] if row < len(lines) else ""
    at = line[col] if col < len(line) else ""
    before = line[:col].rstrip()
    if at == "-":
        return Plain(
            row + 1,
            col + 1,
            "a list item where a key was expected",
            "a list belongs under a key of its own (`key:` and then `- item` lines), or the item "
            "is indented wrongly",
        )
    if before.endswith(('"', "'")):
        return Plain(row + 1, col + 1, "text after a closing quote", "put the whole value inside the quotes")
    value = before.split(": ", 1)[1].lstrip() if ": " in before else ""
    if value.startswith(("{", "[")):
        syntax = "{...}" if value[0] == "{" else "[...]"
        return Plain(
            row + 1,
            len(before) - len(before.split(": ", 1)[1].lstrip()) + 1,
            f"a value starting with {value[0]!r} is read as YAML's {syntax} syntax",
            f'{_QUOTE} (a command such as "bin/backend --port {{port}}" must be quoted)',
        )
    opened = exc.context_mark
    first = opened.line if opened is not None else 0
    above = sorted(
        {
            _indent(lines[i])
            for i in range(first, row)
            if lines[i].strip() and not lines[i].lstrip().startswith("#")
        }
    )
    if line.strip() and above and _indent(line) not in above:
        columns = " or ".join(str(c + 1) for c in above)
        return Plain(
            row + 1,
            _indent(line) + 1,
            f"indented to column {_indent(line) + 1}, which lines up with no key above it",
            f"line it up with the keys it belongs with (column {columns})",
        )
    return Plain(
        row + 1,
        col + 1,
        "YAML expected a new `key:` here",
        f"check the indentation of this line and the one above; if this is part of a value, {_QUOTE}",
    )
