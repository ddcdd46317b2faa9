"""Env values: verbatim text, ${NAME} from the reconciler's environment, from a file, or
from an age-encrypted file committed beside the desired state (see spec/age.py).

Values that come from the environment or a file are secret unless said otherwise, so secrets
can stay out of git (or in it, encrypted). A secret's value only ever reaches the host's
EnvironmentFile; every output names it and says whether it changed, nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.errors import InputProblem
from reconciler.spec.age import AgeFiles
from reconciler.spec.model import EnvVar, RegistryAuth
from reconciler.spec.yaml_source import SourceDoc

_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_VALUE = 65536
SOURCES = ("value", "from_env", "from_file", "from_age")


def _bad_text(value: str) -> str | None:
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        return "contains a line break or control character; an EnvironmentFile holds one line per variable"
    if len(value) > MAX_VALUE:
        return f"is longer than {MAX_VALUE} characters"
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


def resolve_env(
    doc: SourceDoc,
    base_dir: Path,
    environ: Mapping[str, str],
    at: tuple[str | int, ...] = ("env",),
    age: AgeFiles | None = None,
) -> tuple[tuple[EnvVar, ...], list[InputProblem]]:
    """Resolve the env mapping found at path `at` of the document. `age` decrypts encrypted
    files (one shared per load, so a file used by several values is decrypted once)."""
    age = age or AgeFiles(environ)
    raw: Any = doc.data
    for key in at:
        raw = raw.get(key) if isinstance(raw, dict) else raw[key] if isinstance(key, int) else None
    raw = raw or {}
    out: list[EnvVar] = []
    problems: list[InputProblem] = []
    for name, spec in raw.items():
        path = (*at, name)
        value, secret, why = _one(spec, base_dir, environ, age)
        if why is None and value is not None:
            why = _bad_text(value)
        if why is not None or value is None:
            # An encrypted file's problem is located at the from_age field that names it.
            at_age = isinstance(spec, dict) and [k for k in SOURCES if k in spec] == ["from_age"]
            problems.append(doc.problem((*path, "from_age") if at_age else path, why or "has no value"))
            continue
        out.append(EnvVar(name, value, secret))
    return tuple(out), problems


def _one(
    spec: Any, base_dir: Path, environ: Mapping[str, str], age: AgeFiles
) -> tuple[str | None, bool, str | None]:
    if isinstance(spec, str):
        value, used, missing = interpolate(spec, environ)
        if missing:
            names = ", ".join(missing)
            return None, True, f"the environment variable {names} is not set where reconcile runs"
        return value, used, None
    sources = [k for k in SOURCES if k in spec]
    if len(sources) != 1:
        return None, False, "give exactly one of value, from_env, from_file, from_age"
    kind = sources[0]
    if "key" in spec and kind != "from_age":
        return None, False, "`key` picks a variable out of an age-encrypted file: use it with from_age"
    if kind == "value":
        return spec["value"], bool(spec.get("secret", False)), None
    if kind == "from_age":
        if spec.get("secret", True) is not True:
            return None, True, "a value from an encrypted file is always secret: remove `secret: false`"
        source = Path(spec["from_age"])
        decrypted, why = age.value(source if source.is_absolute() else base_dir / source, spec.get("key"))
        return decrypted, True, why
    secret = bool(spec.get("secret", True))
    if kind == "from_env":
        var = spec["from_env"]
        if var not in environ:
            return None, secret, f"the environment variable {var} is not set where reconcile runs"
        return environ[var], secret, None
    path = Path(spec["from_file"])
    path = path if path.is_absolute() else base_dir / path
    try:
        data = path.read_bytes()[: MAX_VALUE + 2]
    except OSError as exc:
        return None, secret, f"cannot read {path}: {exc.strerror}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, secret, f"{path} is not UTF-8 text"
    return text.removesuffix("\n"), secret, None


def resolve_registry_auth(
    doc: SourceDoc, base_dir: Path, environ: Mapping[str, str], age: AgeFiles | None = None
) -> tuple[RegistryAuth | None, list[InputProblem]]:
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
        value, _secret, why = _one(spec, base_dir, environ, age or AgeFiles(environ))
        if why is None and value is not None:
            why = _bad_text(value) or (None if value else "is empty")
        if why is not None or value is None:
            problems.append(doc.problem(("registry_auth", key), why or "has no value"))
            continue
        values[key] = value
        names.append(_source_name(spec, key))
    if problems:
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
