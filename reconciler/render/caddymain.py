"""The main Caddyfile: what is in it, and the least edit that makes it import the apps'
fragments.

The main file belongs to whoever wrote it; the reconciler only adds its import line. Two
exceptions: a file nobody wrote (missing, or Caddy's stock welcome page, byte for byte as
the package ships it) is replaced by one that only imports the fragments, and with --adopt a
site block that serves this app's address is taken out (it moves into the app's fragment).

The parser reads only what it needs: top-level blocks and their addresses, counting braces
outside quotes and comments. Caddy itself validates every result before it is used.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

HEADER = "# Managed by reconciler: every app's site is a fragment in {apps_dir}/.\n"
# The Caddyfile that Caddy's own packages (Debian's, and caddyserver's apt repository) ship.
STOCK_SHA256 = frozenset({"66177d46fa761acb07208065db9b0274cb1b12c02ac43b9bfc9857b698b1ccfe"})
_OLD_WHOLE_FILE = re.compile(r"^# Managed by reconciler \(([^)]+)\): edits here are reverted")


def import_line(apps_dir: str) -> str:
    return f"import {apps_dir}/*.caddy"


def render(apps_dir: str) -> str:
    """A main file of the reconciler's own: nothing but the apps' fragments."""
    return HEADER.format(apps_dir=apps_dir) + import_line(apps_dir) + "\n"


def is_stock(text: str) -> bool:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest() in STOCK_SHA256


def owner(text: str) -> str | None:
    """The app whose whole Caddyfile this is (written by an older reconciler), if any."""
    match = _OLD_WHOLE_FILE.match(text)
    return match.group(1) if match else None


def imports(text: str, apps_dir: str) -> bool:
    want = import_line(apps_dir)
    return any(line.strip() == want for line in text.splitlines())


@dataclass(frozen=True)
class Block:
    first: int  # 0-based line numbers, inclusive
    last: int
    addresses: tuple[str, ...]


def blocks(text: str) -> list[Block]:
    """Top-level site blocks (not the global options block, snippets or named routes)."""
    out: list[Block] = []
    depth = 0
    start = 0
    header: list[str] = []
    for number, line in enumerate(text.splitlines()):
        words = _tokens(line)
        for word in words:
            if word == "{":
                if depth == 0:
                    start, header = number, list(words[: words.index("{")])
                depth += 1
            elif word == "}":
                depth -= 1
                if depth == 0 and header and not header[0].startswith(("(", "&(")):
                    addresses = tuple(a for t in header for a in t.split(",") if a)
                    out.append(Block(start, number, addresses))
                    header = []
    return out


def _tokens(line: str) -> list[str]:
    """Words and braces of one line, without comments; quoted text is one opaque word."""
    out: list[str] = []
    word = ""
    quote = ""
    for char in line:
        if quote:
            word += char
            if char == quote:
                quote = ""
            continue
        if char in '"`':
            quote = char
            word += char
        elif char == "#" and not word:
            break
        elif char.isspace() or char in "{}":
            if word:
                out.append(word)
                word = ""
            if char in "{}":
                out.append(char)
        else:
            word += char
    if word:
        out.append(word)
    return out


def _normal(address: str) -> tuple[str, str]:
    """(host, port) with the defaults Caddy applies; "" is any host."""
    rest = address
    scheme = ""
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
    rest = rest.split("/", 1)[0]
    host, _, port = rest.rpartition(":") if ":" in rest and not rest.endswith("]") else (rest, "", "")
    if not port:
        port = "80" if scheme == "http" else "443" if scheme == "https" or host else ""
    return (host.lower().strip("*."), port)


def serves(block: Block, address: str) -> bool:
    want = _normal(address)
    return any(_normal(a) == want for a in block.addresses)


def conflicts(text: str, address: str) -> list[Block]:
    return [b for b in blocks(text) if serves(b, address)]


def adopt(text: str, address: str, apps_dir: str) -> str:
    """The main file without the blocks that serve `address`, and with the import line."""
    lines = text.splitlines()
    for block in reversed(conflicts(text, address)):
        del lines[block.first : block.last + 1]
    out = "\n".join(lines).rstrip("\n") + "\n"
    return with_import(out, apps_dir)


def with_import(text: str, apps_dir: str) -> str:
    if imports(text, apps_dir):
        return text
    return text.rstrip("\n") + "\n\n" + import_line(apps_dir) + "\n"
