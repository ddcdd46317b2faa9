"""paramiko, without the import of `invoke` it makes only for ssh configs' `Match exec`.

paramiko imports invoke eagerly, and invoke pulls in unittest.mock and asyncio: 35-70 ms of a
~300 ms SSH no-op. paramiko already treats invoke as optional (a `Match exec` line then raises
the import error), so it is left out unless the user's ssh config has such a line.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def _config_uses_match_exec() -> bool:
    try:
        text = (Path.home() / ".ssh" / "config").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(r"^\s*match\b.*\bexec\b", text, re.IGNORECASE | re.MULTILINE) is not None


if "invoke" not in sys.modules and not _config_uses_match_exec():
    sys.modules["invoke"] = None  # type: ignore[assignment]  # makes `import invoke` fail fast

import paramiko  # noqa: E402

__all__ = ["paramiko"]
