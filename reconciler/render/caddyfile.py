"""The app's Caddy fragment: the backend's paths and health to the backend, the rest to the
frontend.

Each app owns one fragment, imported by the main Caddyfile (see caddymain), so several apps
share one Caddy. A fragment says in a comment which site and ports it claims, so another
app's planner can refuse a collision before anything changes.

Routes are `handle` blocks with named matchers, written in the order they are tried: Caddy
keeps blocks with named matchers in the order written (it sorts only single-path ones), so
private paths come first, then the backend's, then fingerprinted assets, then the rest.

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
    ports: tuple[int, ...] = ()  # every port the app's processes listen on (claimed)
    maintenance: bool = False  # 503 with Retry-After for everything but the health path
    maintenance_page: str | None = None  # a file under static_root, else a plain default
    backend_paths: tuple[str, ...] = ("/api/*",)  # Caddy path patterns (reconciler/spec/paths.py)
    private_paths: tuple[str, ...] = ()  # answered 404
    spa: bool = False  # static: a missing file is answered with /index.html
    immutable_paths: tuple[str, ...] = ()  # static: fingerprinted files, cached for a year


def _proxy(port: int) -> list[str]:
    # While a backend restarts, Caddy retries the dial instead of answering 502 at once.
    return [
        f"\t\treverse_proxy 127.0.0.1:{port} {{",
        "\t\t\tlb_try_duration 5s",
        "\t\t\tlb_try_interval 100ms",
        "\t\t}",
    ]


COLOUR_MARK = "# routes to colour: "
CLAIMS_MARK = "# claims: "
MAINTENANCE_TEXT = "This site is down for maintenance and will be back shortly."
IMMUTABLE = "public, max-age=31536000, immutable"
# Every other static file: browsers revalidate (ETag) before each use, so a deploy shows at
# once; without a header they would guess a freshness from Last-Modified, which for files of
# a reproducible build (mtime 1970) is years.
REVALIDATE = "no-cache"
# Served instead of the file when the release has it and the client accepts the encoding.
PRECOMPRESSED = "br zstd gzip"


def routed_colour(text: str | None) -> str | None:
    """The colour a rendered Caddyfile routes to, read back from its marker line."""
    for line in (text or "").splitlines():
        if line.startswith(COLOUR_MARK):
            return line[len(COLOUR_MARK) :].strip()
    return None


@dataclass(frozen=True)
class Claims:
    app: str
    site: str
    ports: tuple[int, ...]


def claims_of(text: str | None) -> Claims | None:
    """What a fragment claims (from its header), or None if it is not one of ours."""
    app = site = None
    ports: tuple[int, ...] = ()
    for line in (text or "").splitlines():
        if line.startswith("# Managed by reconciler (") and ")" in line:
            app = line[len("# Managed by reconciler (") : line.index(")")]
        elif line.startswith(CLAIMS_MARK):
            fields = dict(f.split("=", 1) for f in line[len(CLAIMS_MARK) :].split() if "=" in f)
            site = fields.get("site")
            ports = tuple(int(p) for p in fields.get("ports", "").split(",") if p.isdigit())
    return Claims(app, site, ports) if app and site else None


def render(site: Site) -> str:
    lines = [HEADER.format(app=site.app).rstrip("\n")]
    ports = ",".join(str(p) for p in sorted(set(site.ports or (site.backend_port,))))
    lines.append(f"{CLAIMS_MARK}site={site.address} ports={ports}")
    if site.colour:
        lines.append(COLOUR_MARK + site.colour)
    lines += [f"{site.address} {{", "\tencode gzip"]
    if site.private_paths:
        lines += _route("private", site.private_paths, ["\t\trespond 404"])
    backend = [site.health_path]
    if not site.maintenance:
        backend += [p for p in site.backend_paths if p != site.health_path]
    lines += _route("backend", backend, _proxy(site.backend_port))
    static = site.static_root is not None and not site.maintenance
    if static and site.immutable_paths:
        lines += _route("immutable", site.immutable_paths, _immutable(site))
    lines.append("\thandle {")
    if site.maintenance:
        lines += _maintenance(site)
    elif site.static_root is not None:
        lines += [f"\t\troot * {site.static_root}", f'\t\theader Cache-Control "{REVALIDATE}"']
        if site.spa:
            lines.append("\t\ttry_files {path} /index.html")
        lines += _file_server()
    elif site.frontend_port is not None:
        lines += _proxy(site.frontend_port)
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


def _route(name: str, patterns: list[str] | tuple[str, ...], body: list[str]) -> list[str]:
    return [f"\t@{name} path {' '.join(patterns)}", f"\thandle @{name} {{", *body, "\t}"]


def _immutable(site: Site) -> list[str]:
    # Only a file that exists gets the year-long header: a 404 carrying it could be kept by a
    # browser for a year (an asset asked of the old release a moment before a switch).
    return [
        f"\t\troot * {site.static_root}",
        "\t\t@exists file",
        f'\t\theader @exists Cache-Control "{IMMUTABLE}"',
        *_file_server(),
    ]


def _file_server() -> list[str]:
    return ["\t\tfile_server {", f"\t\t\tprecompressed {PRECOMPRESSED}", "\t\t}"]


def _maintenance(site: Site) -> list[str]:
    """503 with Retry-After, for browsers and for clients that retry on their own."""
    lines = ["\t\theader Retry-After 120"]
    if site.maintenance_page and site.static_root:
        return [
            *lines,
            f"\t\troot * {site.static_root}",
            f"\t\trewrite * /{site.maintenance_page}",
            "\t\tfile_server {",
            "\t\t\tstatus 503",
            "\t\t}",
        ]
    return [*lines, f'\t\trespond "{MAINTENANCE_TEXT}" 503']
