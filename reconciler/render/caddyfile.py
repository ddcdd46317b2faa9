"""The Caddyfile the reconciler owns: API and health to the backend, the rest to the frontend.

Every value placed here was validated by the schema (site address, paths, ports), so no
quoting is needed and none is attempted.
"""

from __future__ import annotations

from dataclasses import dataclass

HEADER = "# Managed by reconciler ({app}): edits here are reverted on the next run.\n"


@dataclass(frozen=True)
class Site:
    app: str
    address: str  # ":80", "example.com"
    backend_port: int
    health_path: str
    static_root: str | None = None  # file_server root, or
    frontend_port: int | None = None  # a dev server to proxy to


def _proxy(port: int) -> list[str]:
    # While a backend restarts, Caddy retries the dial instead of answering 502 at once.
    return [
        f"\t\treverse_proxy 127.0.0.1:{port} {{",
        "\t\t\tlb_try_duration 5s",
        "\t\t\tlb_try_interval 100ms",
        "\t\t}",
    ]


def render(site: Site) -> str:
    lines = [HEADER.format(app=site.app).rstrip("\n"), f"{site.address} {{", "\tencode gzip"]
    for matcher in ("/api/*", site.health_path):
        lines += [f"\thandle {matcher} {{", *_proxy(site.backend_port), "\t}"]
    lines.append("\thandle {")
    if site.static_root is not None:
        lines += [f"\t\troot * {site.static_root}", "\t\tfile_server"]
    elif site.frontend_port is not None:
        lines += _proxy(site.frontend_port)
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"
