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
    colour: str | None = None  # blue-green: which colour this config routes to


def _proxy(port: int) -> list[str]:
    # While a backend restarts, Caddy retries the dial instead of answering 502 at once.
    return [
        f"\t\treverse_proxy 127.0.0.1:{port} {{",
        "\t\t\tlb_try_duration 5s",
        "\t\t\tlb_try_interval 100ms",
        "\t\t}",
    ]


COLOUR_MARK = "# routes to colour: "


def routed_colour(text: str | None) -> str | None:
    """The colour a rendered Caddyfile routes to, read back from its marker line."""
    for line in (text or "").splitlines():
        if line.startswith(COLOUR_MARK):
            return line[len(COLOUR_MARK) :].strip()
    return None


def render(site: Site) -> str:
    lines = [HEADER.format(app=site.app).rstrip("\n")]
    if site.colour:
        lines.append(COLOUR_MARK + site.colour)
    lines += [f"{site.address} {{", "\tencode gzip"]
    for matcher in ("/api/*", site.health_path):
        lines += [f"\thandle {matcher} {{", *_proxy(site.backend_port), "\t}"]
    lines.append("\thandle {")
    if site.static_root is not None:
        lines += [f"\t\troot * {site.static_root}", "\t\tfile_server"]
    elif site.frontend_port is not None:
        lines += _proxy(site.frontend_port)
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"
