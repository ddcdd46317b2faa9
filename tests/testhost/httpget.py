"""Plain HTTP GETs from this machine to a host over its veth (no proxies, no redirects)."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from tests.testhost.errors import TesthostError


class Headers(Mapping[str, str]):
    """Response headers with case-insensitive lookup (repeated headers joined by ", ")."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in items:
            key = name.lower()
            previous = self._items.get(key)
            self._items[key] = (name, f"{previous[1]}, {value}" if previous else value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _value in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Headers
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def get(
    address: str,
    path: str = "/",
    *,
    port: int = 80,
    timeout: float = 5,
    headers: Mapping[str, str] | None = None,
) -> HttpResponse:
    """One GET; connection errors raise OSError (callers that poll catch it)."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        response = conn.getresponse()
        body = response.read()
        return HttpResponse(response.status, Headers(response.getheaders()), body)
    finally:
        conn.close()


def wait_for(
    address: str,
    path: str = "/",
    *,
    port: int = 80,
    status: int = 200,
    timeout: float = 10,
    interval: float = 0.05,
) -> HttpResponse:
    """Poll until a GET returns `status`; raise TesthostError with the last outcome."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while True:
        try:
            response = get(address, path, port=port, timeout=min(5.0, max(timeout, 0.5)))
            if response.status == status:
                return response
            last = f"status {response.status}: {response.text[:200]!r}"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            url = f"http://{address}:{port}{path}"
            raise TesthostError(f"{url} did not return {status} within {timeout:g}s ({last})")
        time.sleep(interval)
