"""How the agent's modules load on a host where none of them is installed: from the sources
sent along on stdin, kept in memory. Nothing is written to the host.

The bootstrap command executes this file's source with the sources in hand, calls
`install`, then imports `hostagent.main`. Relative imports inside the package resolve as
they do when the package is imported in-process as `reconciler.agent`.
"""

from __future__ import annotations

import sys
from importlib.machinery import ModuleSpec
from typing import Any

PACKAGE = "hostagent"


class SourceFinder:
    """A meta path finder and loader for one package whose module sources are in a dict."""

    def __init__(self, sources: dict[str, str]) -> None:
        self.sources = sources

    def _short(self, name: str) -> str | None:
        if name == PACKAGE:
            return "__init__"
        if name.startswith(PACKAGE + "."):
            return name[len(PACKAGE) + 1 :]
        return None

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        short = self._short(name)
        if short is None or short not in self.sources:
            return None
        return ModuleSpec(name, self, is_package=name == PACKAGE)  # type: ignore[arg-type]

    def create_module(self, spec: ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: Any) -> None:
        short = self._short(module.__name__) or "__init__"
        code = compile(self.sources[short], f"<{PACKAGE}>/{short}.py", "exec")
        exec(code, module.__dict__)  # noqa: S102 - the agent's own source, sent by the controller


def install(sources: dict[str, str]) -> None:
    sys.meta_path.insert(0, SourceFinder(sources))
