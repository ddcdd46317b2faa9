"""Env values: verbatim text, ${NAME} from the reconciler's environment, from a file, or
from an age-encrypted file committed beside the desired state (see spec/age.py).

Values that come from the environment or a file are secret unless said otherwise, so secrets
can stay out of git (or in it, encrypted). A secret's value only ever reaches the host's
EnvironmentFile; every output names it and says whether it changed, nothing more.

Values are read even when other passes found problems, so every unset variable and missing
file is reported with the rest; a value the schema already refused is skipped here. Offline
(`reconcile validate --offline`), nothing secret is read: variables need not be set, files
must exist, and what was not read is noted in a Skipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import InputProblem
from reconciler.spec.age import AgeFiles, check_without_key
from reconciler.spec.model import EnvVar, RegistryAuth
from reconciler.spec.offline import Skipped
from reconciler.spec.said import Said
from reconciler.spec.yaml_source import SourceDoc

_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_VALUE = 65536
SOURCES = ("value", "from_env", "from_file", "from_age")
OFFLINE_HINT = (
    "set it where reconcile runs (CI: from its secret store); `validate --offline` checks without it"
)


@dataclass
class Reader:
    """How this load reads secret values: for real, or (offline) only checked to exist."""

    environ: Mapping[str, str]
    base_dir: Path
    age: AgeFiles
    offline: bool = False
    skipped: Skipped = field(default_factory=Skipped)

    @classmethod
    def of(cls, environ: Mapping[str, str], base_dir: Path, *, offline: bool = False) -> Reader:
        return cls(environ, base_dir, AgeFiles(environ), offline)

    def path(self, written: str) -> Path:
        p = Path(written)
        return p if p.is_absolute() else self.base_dir / p


def unset(name: str) -> Said:
    return Said(f"the environment variable {name} is not set where reconcile runs", OFFLINE_HINT)


def _bad_text(value: str) -> Said | None:
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        return Said(
            "contains a line break or control character",
            "an EnvironmentFile holds one line per variable: keep the value on one line",
        )
    if len(value) > MAX_VALUE:
        return Said(f"is longer than {MAX_VALUE} characters", "keep large data in a file the app reads")
    return None


def interpolate(text: str, environ: Mapping[str, str]) -> tuple[str, bool, list[str]]:
    """Replace ${NAME}; `$$` is a literal `$`. Returns (value, used_any, missing names)."""
    used = False
    missing: list[str] = []

    def one(m: re.Match[str]) -> str:
        nonlocal used
        if m.group(0) == "$$":
            return "$"
        used = True
        name = m.group(1)
        if name not in environ:
            missing.append(name)
            return ""
        return environ[name]

    return _REF.sub(one, text), used, missing


def references(text: str) -> list[str]:
    """The ${NAME}s in a value, in order."""
    return [m.group(1) for m in _REF.finditer(text) if m.group(1)]


def resolve_env(
    doc: SourceDoc, reader: Reader, at: tuple[str | int, ...] = ("env",)
) -> tuple[tuple[EnvVar, ...], list[InputProblem]]:
    """Resolve the env mapping found at path `at` of the document. One AgeFiles is shared per
    load, so a file used by several values is decrypted once."""
    raw: Any = doc.data
    for key in at:
        if isinstance(raw, dict):
            raw = raw.get(key)
        elif isinstance(raw, list) and isinstance(key, int) and key < len(raw):
            raw = raw[key]
        else:
            raw = None
    if not isinstance(raw, dict):
        return (), []  # absent, or not a mapping: the schema says so
    out: list[EnvVar] = []
    problems: list[InputProblem] = []
    for name, spec in raw.items():
        path = (*at, name)
        if not isinstance(name, str) or not isinstance(spec, (str, dict)):
            continue
        value, secret, why = _one(spec, reader)
        if why is None and value is not None:
            why = _bad_text(value)
        if why is not None:
            # An encrypted file's problem is located at the from_age field that names it.
            at_age = isinstance(spec, dict) and [k for k in SOURCES if k in spec] == ["from_age"]
            problems.append(doc.problem((*path, "from_age") if at_age else path, why.message, why.hint))
            continue
        # Offline, a value that was not read stands in as an empty secret.
        out.append(EnvVar(name, value if value is not None else "", secret or value is None))
    return tuple(out), problems


def _one(spec: Any, reader: Reader) -> tuple[str | None, bool, Said | None]:
    """(value, secret, why). Offline, a value that would be read from a secret is None."""
    if isinstance(spec, str):
        if reader.offline:
            names = references(spec)
            reader.skipped.variables.update(names)
            return (None, True, None) if names else (interpolate(spec, {})[0], False, None)
        value, used, missing = interpolate(spec, reader.environ)
        if missing:
            return None, True, unset(", ".join(missing))
        return value, used, None
    sources = [k for k in SOURCES if k in spec]
    if len(sources) != 1:
        return None, False, Said("give exactly one of value, from_env, from_file, from_age")
    kind = sources[0]
    if not isinstance(spec[kind], str):
        return None, False, None  # the schema reports it
    if "key" in spec and kind != "from_age":
        return (
            None,
            False,
            Said("`key` picks a variable out of an age-encrypted file", "use it with from_age"),
        )
    if kind == "value":
        return spec["value"], bool(spec.get("secret", False)), None
    if kind == "from_age":
        if spec.get("secret", True) is not True:
            return (
                None,
                True,
                Said("a value from an encrypted file is always secret", "remove `secret: false`"),
            )
        source = reader.path(spec["from_age"])
        if reader.offline:
            reader.skipped.encrypted.add(spec["from_age"])
            return None, True, check_without_key(source)
        key = spec.get("key")
        decrypted, why = reader.age.value(source, key if isinstance(key, str) else None)
        return decrypted, True, why
    secret = bool(spec.get("secret", True))
    if kind == "from_env":
        var = spec["from_env"]
        if reader.offline:
            reader.skipped.variables.add(var)
            return None, secret, None
        if var not in reader.environ:
            return None, secret, unset(var)
        return reader.environ[var], secret, None
    path = reader.path(spec["from_file"])
    if reader.offline:
        reader.skipped.files.add(spec["from_file"])
        if not path.is_file():
            return (
                None,
                secret,
                _unreadable(path, "No such file or directory" if not path.exists() else "not a file"),
            )
        return None, secret, None
    try:
        data = path.read_bytes()[: MAX_VALUE + 2]
    except OSError as exc:
        return None, secret, _unreadable(path, exc.strerror or str(exc))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, secret, Said(f"{path} is not UTF-8 text", "a value is text: save the file as UTF-8")
    return text.removesuffix("\n"), secret, None


def _unreadable(path: Path, why: str) -> Said:
    return Said(
        f"cannot read {path}: {why}",
        "create the file on the machine running reconcile (a path is relative to the desired-state file)",
    )


def resolve_registry_auth(doc: SourceDoc, reader: Reader) -> tuple[RegistryAuth | None, list[InputProblem]]:
    """registry_auth's username and password, read like env values. Both are treated as
    secret whatever their source: they are shown nowhere, only the names they came from."""
    raw = doc.data.get("registry_auth") if isinstance(doc.data, dict) else None
    if not isinstance(raw, dict):
        return None, []
    values: dict[str, str] = {}
    names: list[str] = []
    problems: list[InputProblem] = []
    for key in ("username", "password"):
        spec = raw.get(key)
        if not isinstance(spec, (str, dict)):
            continue
        value, _secret, why = _one(spec, reader)
        if why is None and value is not None:
            why = _bad_text(value) or (
                None if value else Said("is empty", "give the registry's user and token")
            )
        if why is not None:
            problems.append(doc.problem(("registry_auth", key), why.message, why.hint))
            continue
        values[key] = value or ""
        names.append(_source_name(spec, key))
    if problems or len(values) < 2:
        return None, problems
    return RegistryAuth(values["username"], values["password"], tuple(names)), []


def _source_name(spec: Any, key: str) -> str:
    """How a plan may name a credential: the variable or file it came from, never its value."""
    if isinstance(spec, str):
        found = _REF.search(spec)
        return f"${{{found.group(1)}}}" if found and found.group(1) else f"registry_auth.{key}"
    if "from_env" in spec:
        return f"${{{spec['from_env']}}}"
    if "from_file" in spec:
        return str(spec["from_file"])
    return f"registry_auth.{key}"
