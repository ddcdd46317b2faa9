"""Request path patterns, as Caddy's `path` matcher reads them.

The desired state names request paths (the backend's routes, private paths, fingerprinted
assets) with the subset of Caddy's path patterns that is easy to read: an exact path
(`/ws`), a prefix (`/api/*`: anything below, at any depth), or one `*` inside a path
(`/index-*.js`: anything within that one path segment). The schema's pattern admits nothing
else, and Caddy matches case-insensitively, as `matches` does; the checks in semantics use
it to say when one list hides a path that must stay reachable.
"""

from __future__ import annotations


def matches(pattern: str, path: str) -> bool:
    """Whether Caddy 2.6+ matches request `path` with `pattern` (one of the schema's forms)."""
    pattern, path = pattern.lower(), path.lower()
    if "*" not in pattern:
        return path == pattern
    head, _, tail = pattern.partition("*")
    if not tail:
        return path.startswith(head)
    # A `*` inside the pattern is a glob (Go's path.Match): it never crosses a `/`.
    if len(path) < len(head) + len(tail) or not (path.startswith(head) and path.endswith(tail)):
        return False
    return "/" not in path[len(head) : len(path) - len(tail)]
