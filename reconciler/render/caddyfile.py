"""The app's Caddy fragment: the backend's paths and health to the backend, the rest to the
frontend.

Each app owns one fragment, imported by the main Caddyfile (see caddymain), so several apps
share one Caddy. A fragment says in a comment which site and ports it claims, so another
app's planner can refuse a collision before anything changes.

Routes are `handle` blocks with named matchers, written in the order they are tried: Caddy
keeps blocks with named matchers in the order written (it sorts only single-path ones), so
the maintenance switch comes first, then private paths, then the backend's, then
fingerprinted assets, then the rest.

Two things in it are there for the reconciler to read back from Caddy itself:

- a mark, `vars reconciler_fragment_<app> <digest>`: Caddy keeps it in the configuration it
  loaded, so whether it runs the fragment on disk is asked of Caddy (agent/caddyconfig.py);
- a maintenance switch: a file matcher on `<apps>/<app>.maintenance`. While that file exists
  everything but the health path answers 503, with no reload and whatever else the host is
  doing (a quarantined release, a rollback, a pause): maintenance changes the answer, never
  what runs.

Every value placed here was validated by the schema (site address, paths, ports), so no
quoting is needed and none is attempted.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.agent.caddyconfig import MARK, fragment_digest

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
    # The file whose presence switches maintenance on (503 for all but the health path).
    maintenance_flag: str = "/etc/caddy/apps/app.maintenance"
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
    head = [HEADER.format(app=site.app).rstrip("\n")]
    ports = ",".join(str(p) for p in sorted(set(site.ports or (site.backend_port,))))
    head.append(f"{CLAIMS_MARK}site={site.address} ports={ports}")
    if site.colour:
        head.append(COLOUR_MARK + site.colour)
    lines = ["\tencode gzip", *_maintenance_switch(site)]
    if site.private_paths:
        lines += _route("private", site.private_paths, ["\t\trespond 404"])
    backend = [site.health_path, *(p for p in site.backend_paths if p != site.health_path)]
    lines += _route("backend", backend, _proxy(site.backend_port))
    if site.static_root is not None and site.immutable_paths:
        lines += _route("immutable", site.immutable_paths, _immutable(site))
    lines.append("\thandle {")
    if site.static_root is not None:
        lines += [f"\t\troot * {site.static_root}", f'\t\theader Cache-Control "{REVALIDATE}"']
        if site.spa:
            lines.append("\t\ttry_files {path} /index.html")
        lines += _file_server()
    elif site.frontend_port is not None:
        lines += _proxy(site.frontend_port)
    lines.append("\t}")
    unmarked = "\n".join([*head, f"{site.address} {{", *lines, "}"]) + "\n"
    mark = f"\tvars {MARK}{site.app} {fragment_digest(unmarked)}"
    return "\n".join([*head, f"{site.address} {{", mark, *lines, "}"]) + "\n"


def mark_of(text: str | None, app: str) -> str | None:
    """The digest a fragment's mark line carries (None: no mark)."""
    prefix = f"\tvars {MARK}{app} "
    for line in (text or "").splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    return None


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


def _maintenance_switch(site: Site) -> list[str]:
    """503 with Retry-After, for browsers and for clients that retry on their own, while the
    flag file exists; the health path still reaches the backend, so gates work meanwhile."""
    folder, _, name = site.maintenance_flag.rpartition("/")
    lines = [
        "\t@maintenance {",
        "\t\tfile {",
        f"\t\t\troot {folder or '/'}",
        f"\t\t\ttry_files /{name}",
        "\t\t}",
        f"\t\tnot path {site.health_path}",
        "\t}",
        "\thandle @maintenance {",
        "\t\theader Retry-After 120",
    ]
    if site.maintenance_page and site.static_root:
        lines += [
            f"\t\troot * {site.static_root}",
            f"\t\trewrite * /{site.maintenance_page}",
            "\t\tfile_server {",
            "\t\t\tstatus 503",
            "\t\t}",
        ]
    else:
        lines.append(f'\t\trespond "{MAINTENANCE_TEXT}" 503')
    return [*lines, "\t}"]


def with_switch(text: str, site: Site) -> str:
    """An older fragment (no mark, no maintenance switch) with both added, everything it
    routed kept as it was, one level down."""
    lines = text.splitlines()
    opening = f"{site.address} {{"
    if opening not in lines or "}" not in lines:
        return text
    start = lines.index(opening)
    end = len(lines) - 1 - lines[::-1].index("}")
    head, body, tail = lines[: start + 1], lines[start + 1 : end], lines[end:]
    top = [ln for ln in body if ln.strip() == "encode gzip"]
    rest = [f"\t{ln}" if ln else ln for ln in body if ln.strip() != "encode gzip"]
    inner = [*top, *_maintenance_switch(site), "\thandle {", *rest, "\t}"]
    unmarked = "\n".join([*head, *inner, *tail]) + "\n"
    mark = f"\tvars {MARK}{site.app} {fragment_digest(unmarked)}"
    return "\n".join([*head, mark, *inner, *tail]) + "\n"
