"""known_hosts, read as OpenSSH reads it, and the one line `--accept-new-host-key` adds.

A line is `[@marker] hosts keytype base64 [comment]`. `hosts` is a comma-separated list of
patterns (`*` and `?` wildcards, `!` negates, `[host]:port` for ports other than 22) or one
hashed name, `|1|salt|hmac-sha1`. `@revoked` marks a key that must never be accepted;
`@cert-authority` a CA whose signed host certificates are trusted. Comments, blank lines and
lines OpenSSH would ignore (unknown markers, broken base64) are skipped, never fatal.

Matching follows OpenSSH's hostfile.c: a revoked key is refused even when a plain line lists
it; otherwise a key is accepted when a plain line for the host holds exactly it; another key
for the host means it changed; no key at all means the host is new.

Parsing and matching are pure and need neither paramiko nor a connection. `append` is the only
write: under an exclusive flock on the file it reads the file again and, if the host is still
unknown, appends one line for it, so concurrent runs (a fleet's threads, two terminals) never
rewrite or duplicate anything.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

REVOKED = "revoked"
CERT_AUTHORITY = "cert-authority"
MARKERS = {"@revoked": REVOKED, "@cert-authority": CERT_AUTHORITY}
HASH_MAGIC = "|1|"

# Verdicts of check(), in OpenSSH's words.
OK, REVOKED_KEY, CHANGED, NEW = "ok", "revoked", "changed", "new"


@dataclass(frozen=True)
class Entry:
    """One usable line of a known_hosts file."""

    path: str
    line: int  # 1-based
    marker: str | None  # None, REVOKED or CERT_AUTHORITY
    hosts: str  # the host field as written
    key_type: str
    blob: bytes  # the public key, decoded

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)

    def matches(self, name: str) -> bool:
        """Whether this line's host field names `name` (see lookup_name)."""
        if self.hosts.startswith(HASH_MAGIC):
            return _hashed_match(self.hosts, name)
        return match_hosts(self.hosts, name)


@dataclass(frozen=True)
class Verdict:
    status: str  # OK, REVOKED_KEY, CHANGED or NEW
    entry: Entry | None = None  # the line that decided: the key's, the revoking one, a known other
    known: tuple[Entry, ...] = ()  # plain keys listed for the host
    authorities: tuple[Entry, ...] = ()  # @cert-authority lines for the host


def lookup_name(host: str, port: int) -> str:
    """The name known_hosts files use for a host: `host`, or `[host]:port` off port 22."""
    host = host.lower()
    return host if port == 22 else f"[{host}]:{port}"


def fingerprint(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a public key blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def match_hosts(patterns: str, name: str) -> bool:
    """OpenSSH's match_hostname: any positive pattern matches and no negated one does."""
    matched = False
    for item in patterns.split(","):
        negated = item.startswith("!")
        if _pattern(item.removeprefix("!").lower()).fullmatch(name.lower()):
            if negated:
                return False
            matched = True
    return matched


@cache
def _pattern(pattern: str) -> re.Pattern[str]:
    """`*` and `?` are the only wildcards; everything else ([, ], :) is literal."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S)


def _hashed_match(field: str, name: str) -> bool:
    salt_b64, _, hash_b64 = field[len(HASH_MAGIC) :].partition("|")
    try:
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(hash_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(digest, expected)


def hash_name(name: str, salt: bytes) -> str:
    """The hashed form of a host name (`ssh-keygen -H`), for tests and tools."""
    digest = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"{HASH_MAGIC}{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def parse(text: str, path: str = "known_hosts") -> list[Entry]:
    """Every usable line of one file, in order; what OpenSSH would skip is skipped."""
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        entry = _parse_line(raw, path, number)
        if entry is not None:
            entries.append(entry)
    return entries


def _parse_line(raw: str, path: str, number: int) -> Entry | None:
    fields = raw.split()
    if not fields or fields[0].startswith("#"):
        return None
    marker = None
    if fields[0].startswith("@"):
        marker = MARKERS.get(fields[0])
        if marker is None:
            return None  # an unknown marker: OpenSSH ignores the line
        fields = fields[1:]
    if len(fields) < 3:
        return None
    hosts, key_type, key_b64 = fields[:3]
    try:
        blob = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    if _blob_type(blob) != key_type:
        return None  # truncated, or a key that says it is of another type
    return Entry(path, number, marker, hosts, key_type, blob)


def _blob_type(blob: bytes) -> str | None:
    """The key type named at the start of a public key blob (an SSH string)."""
    if len(blob) < 4:
        return None
    size = int.from_bytes(blob[:4], "big")
    if size > len(blob) - 4:
        return None
    try:
        return blob[4 : 4 + size].decode("ascii")
    except UnicodeDecodeError:
        return None


def load(paths: Iterable[str]) -> list[Entry]:
    """The entries of several files, in order; a missing file has none. Other errors
    (a file we may not read) raise OSError for the caller to explain."""
    entries: list[Entry] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except FileNotFoundError:
            continue
        entries += parse(text, path)
    return entries


def check(entries: Sequence[Entry], name: str, blob: bytes) -> Verdict:
    """What known_hosts says about host `name` offering the public key `blob`."""
    relevant = [e for e in entries if e.matches(name)]
    known = tuple(e for e in relevant if e.marker is None)
    authorities = tuple(e for e in relevant if e.marker == CERT_AUTHORITY)
    for entry in relevant:
        if entry.marker == REVOKED and entry.blob == blob:
            return Verdict(REVOKED_KEY, entry, known, authorities)
    for entry in known:
        if entry.blob == blob:
            return Verdict(OK, entry, known, authorities)
    if known:
        return Verdict(CHANGED, known[0], known, authorities)
    return Verdict(NEW, None, known, authorities)


def key_types(entries: Sequence[Entry], name: str) -> list[str]:
    """The key types of plain lines for `name`, first seen first: what to ask the host for."""
    seen: dict[str, None] = {}
    for entry in entries:
        if entry.marker is None and entry.matches(name):
            seen.setdefault(entry.key_type, None)
    return list(seen)


def append(path: str, name: str, key_type: str, blob: bytes, others: Sequence[Entry] = ()) -> Verdict:
    """Trust a new host key: append `name keytype base64` to `path` unless, read again under
    an exclusive lock, the file (with `others`, the entries of the other files) already
    decides about the host. Returns that fresh verdict: NEW means the line was appended.
    Every byte already in the file stays as it was."""
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        current = _read_fd(fd)
        verdict = check([*others, *parse(current.decode("utf-8", "replace"), path)], name, blob)
        if verdict.status == NEW:
            line = f"{name} {key_type} {base64.b64encode(blob).decode()}\n".encode()
            if current and not current.endswith(b"\n"):
                line = b"\n" + line  # the last line had no end; ours must not join it
            _write_all(fd, line)
            os.fsync(fd)
        return verdict
    finally:
        os.close(fd)  # releases the lock


def _read_fd(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 16, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]
