"""Read a YAML document into plain data while remembering where every value came from.

PyYAML's loaders lose line numbers, silently keep the last of duplicate keys and expand
aliases without limit. Desired-state files deserve better: every error names its line,
a duplicate key is an error, and an alias bomb is refused before it expands. A syntax error
stops the reading (yaml_errors says it plainly); a duplicate key or a tag is noted in
`SourceDoc.problems` and the reading goes on, so the other passes still report theirs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Union

import yaml

from reconciler.errors import InputProblem, InvalidDesiredState
from reconciler.spec.yaml_errors import explain

try:  # libyaml is several times faster; pure Python is the fallback
    _ComposeLoader: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _ComposeLoader = yaml.SafeLoader

MAX_BYTES = 1024 * 1024
MAX_NODES = 20_000
MAX_DEPTH = 64

Path_ = tuple[Union[str, int], ...]  # a runtime alias: `str | int` here needs Python 3.10
Mark = tuple[int, int]  # 1-based line, column

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_COLLECTION_TAGS = {"tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"}
_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}


@dataclass
class SourceDoc:
    """Plain data plus a map from each value's path to where it starts in the file."""

    file: str
    data: Any
    marks: dict[Path_, Mark] = field(default_factory=dict)
    keys: dict[Path_, Mark] = field(default_factory=dict)  # where each mapping key is written
    problems: list[InputProblem] = field(default_factory=list)  # found while reading, not fatal

    def mark_of(self, path: Iterable[str | int]) -> Mark | None:
        """Where `path` starts, or its nearest ancestor when the path itself is absent."""
        p = tuple(path)
        while True:
            if p in self.marks:
                return self.marks[p]
            if not p:
                return None
            p = p[:-1]

    def problem(
        self,
        path: Iterable[str | int],
        message: str,
        hint: str = "",
        *,
        at: Iterable[str | int] | None = None,
        warning: bool = False,
        key: bool = False,
    ) -> InputProblem:
        """A problem with the field at `path`, located at `at` (default: the field itself, or
        the nearest mapping that holds it when it is missing or defaulted); with `key`, at
        the field's name rather than its value (an unknown field, a bad name)."""
        p = tuple(path)
        mark = self.keys.get(p) if key else None
        mark = mark or self.mark_of(p if at is None else tuple(at))
        return InputProblem(
            file=self.file,
            line=mark[0] if mark else None,
            column=mark[1] if mark else None,
            field=dotted(p),
            message=message,
            hint=hint,
            severity="warning" if warning else "error",
        )


def dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _refused(problem: InputProblem) -> InvalidDesiredState:
    return InvalidDesiredState([problem])


def parse(raw: bytes, file: str, *, verbatim: Callable[[Path_], bool] = lambda _p: False) -> SourceDoc:
    """Parse one YAML document; raise InvalidDesiredState naming the first thing that stops it.

    `verbatim(path)` marks fields whose scalars are kept exactly as written (a version
    `1.10` stays "1.10", an env value `yes` stays "yes") instead of YAML 1.1's guesses.
    """
    if len(raw) > MAX_BYTES:
        raise _refused(
            InputProblem(file, None, None, "", f"the file is {len(raw)} bytes; at most {MAX_BYTES} are read")
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _refused(
            InputProblem(
                file, line, col, "", f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
            )
        ) from None
    if "\x00" in text:
        at = text.index("\x00")
        line = text.count("\n", 0, at) + 1
        column = at - (text.rfind("\n", 0, at) + 1) + 1
        raise _refused(
            InputProblem(file, line, column, "", "the file contains a NUL character", "save it as plain text")
        )

    try:
        nodes = list(yaml.compose_all(text, Loader=_ComposeLoader))
    except yaml.MarkedYAMLError as exc:
        plain = explain(exc, text)
        raise _refused(InputProblem(file, plain.line, plain.column, "", plain.message, plain.hint)) from None
    except yaml.YAMLError as exc:
        raise _refused(InputProblem(file, None, None, "", f"YAML error: {exc}")) from None

    if not nodes:
        raise _refused(
            InputProblem(
                file,
                1,
                1,
                "",
                "the file is empty",
                "write a mapping such as `app: myapp` (`reconcile init` writes one)",
            )
        )
    if len(nodes) > 1:
        mark = nodes[1].start_mark
        raise _refused(
            InputProblem(
                file, mark.line + 1, 1, "", "more than one YAML document (`---`); expected exactly one"
            )
        )
    doc = SourceDoc(file=file, data=None)
    builder = _Builder(doc, verbatim)
    doc.data = builder.build(nodes[0], ())
    return doc


class _Builder:
    def __init__(self, doc: SourceDoc, verbatim: Callable[[Path_], bool]) -> None:
        self.doc = doc
        self.verbatim = verbatim
        self.count = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def refuse(self, node: yaml.Node, path: Path_, message: str, hint: str = "") -> InvalidDesiredState:
        return _refused(self.located(node, path, message, hint))

    def located(self, node: yaml.Node, path: Path_, message: str, hint: str = "") -> InputProblem:
        m = node.start_mark
        return InputProblem(self.doc.file, m.line + 1, m.column + 1, dotted(path), message, hint)

    def note(self, node: yaml.Node, path: Path_, message: str, hint: str = "") -> None:
        """A problem that does not stop the reading: the value is left out and the passes
        after this one report what they find in the rest."""
        self.doc.problems.append(self.located(node, path, message, hint))

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.refuse(
                node, path, f"more than {MAX_NODES} values after expanding aliases; refusing (alias bomb?)"
            )
        if len(path) > MAX_DEPTH:
            raise self.refuse(node, path, f"nested deeper than {MAX_DEPTH} levels")
        self.doc.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, path)
        if node.tag not in _SCALAR_TAGS | _COLLECTION_TAGS:
            self.note(node, path, f"unsupported YAML tag {node.tag!r}", "use plain values")
            return None
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        raise self.refuse(node, path, "unsupported YAML node")  # pragma: no cover

    def scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        if node.tag not in _SCALAR_TAGS:
            self.note(node, path, f"unsupported YAML tag {node.tag!r}", "use plain values")
            return None
        if self.verbatim(path):
            # Plain scalars are kept as written; `KEY:` with nothing after it is "".
            return node.value
        construct = self.constructor.yaml_constructors[node.tag]
        return construct(self.constructor, node)

    def mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        out: dict[str, Any] = {}
        seen: dict[str, yaml.Node] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.update(self.merge_source(value_node, path))
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SCALAR_TAGS:
                raise self.refuse(key_node, path, "keys must be plain text")
            key = key_node.value
            if key in seen:
                first = seen[key].start_mark.line + 1
                self.note(
                    key_node,
                    (*path, key),
                    f"duplicate key {key!r} (first defined on line {first})",
                    "keep one of them: YAML tools disagree on which one counts",
                )
                continue
            seen[key] = key_node
            child_path = (*path, key)
            self.doc.keys[child_path] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            # A scalar is located at its value, a nested block at its key's line.
            at = value_node if isinstance(value_node, yaml.ScalarNode) else key_node
            self.doc.marks[child_path] = (at.start_mark.line + 1, at.start_mark.column + 1)
            out[key] = self.build(value_node, child_path)
        for key, value in merged.items():
            out.setdefault(key, value)
        return out

    def merge_source(self, node: yaml.Node, path: Path_) -> dict[str, Any]:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        merged: dict[str, Any] = {}
        for src in sources:
            if not isinstance(src, yaml.MappingNode):
                raise self.refuse(src, path, "`<<` merges only mappings")
            for key, value in self.mapping(src, path).items():
                merged.setdefault(key, value)
        return merged
