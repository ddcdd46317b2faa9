"""`reconcile init`: write a commented desired-state.yaml for an app, one that validates as
written (with --offline while the release it names is not built yet).

The text is rendered here and checked with the loader before it is written, so a file `init`
writes is never one `validate` refuses; a combination the contract refuses (a dev-server
frontend with blue-green, or with an image) is refused here too, naming the options.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from reconciler.spec.load import Checks, check_bytes

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_COMMENT_COLUMN = 35


@dataclass(frozen=True)
class Choices:
    app: str
    target: str = "local"
    strategy: str = "symlink-swap"
    frontend: str = "static"
    image: str | None = None

    @property
    def version(self) -> str:
        """The image's tag when it reads as a version, else 0.1.0."""
        if self.image:
            tag = self.image.rsplit("/", 1)[-1].partition(":")[2]
            if tag and _VERSION.match(tag) and tag != "latest":
                return tag
        return "0.1.0"

    @property
    def source(self) -> str:
        return f"dist/{self.app}-{self.version}.tar.gz"


def _line(code: str, comment: str = "") -> str:
    if not comment:
        return code
    return (
        f"{code.ljust(_COMMENT_COLUMN - 1)} # {comment}"
        if len(code) < _COMMENT_COLUMN - 1
        else f"{code}  # {comment}"
    )


def render(c: Choices) -> str:
    """The commented desired-state.yaml for these choices."""
    app, port = c.app, 8080
    db = f"/var/lib/{app}/{app}.db"
    out = [
        f"# desired-state.yaml for {app}: what should run on the host. Written by `reconcile init`.",
        "# Deploy = commit a bump of release.version; rollback = `git revert` that commit.",
        "# `reconcile validate` checks this file without a host; the README and",
        "# schemas/desired-state.schema.json describe every field.",
        "",
        _line(f"app: {app}", f"names /opt/{app}, {app}-backend.service, /etc/{app}/, ..."),
        "",
        "# Where to converge: `local` (the machine running reconcile) or ssh://[user@]host[:port].",
        "# Point the same file at another host with: reconcile --once --target ssh://root@HOST",
        f"target: {c.target}",
        "",
        "release:",
        _line(f'  version: "{c.version}"', "quoted, so 1.10 stays 1.10; deploy = bump it"),
    ]
    if c.image:
        out += [
            _line(f"  image: {c.image}", "the backend runs from this container image"),
            _line("  # digest: sha256:...", "pin the image: its tag must point to this digest"),
            _line("  # source: dist/image.tar", "or load it from an archive (podman save), not a registry"),
        ]
    else:
        out += [
            _line(f"  source: {c.source}", "built by CI: a .tar.gz or a folder, relative to this file"),
            _line("  # sha256: <64 hex digits>", "optional: refuse an artifact with another checksum"),
        ]
    out += [
        _line("  keep: 5", "releases kept on the host (current and previous always are)"),
        _line("  # tasks:", "run once per release, as the backend runs:"),
        _line("  #   before_switch: [bin/migrate]", "after the database snapshot, before traffic moves"),
        "",
        "# restart:      swap `current` to the new release and restart the backend",
        "# symlink-swap: the same, and keep `previous` so a rollback needs no upload",
        "# blue-green:   two backends on two ports; Caddy switches only after the new one is healthy",
        f"strategy: {c.strategy}",
    ]
    if c.strategy == "blue-green":
        out += [
            "",
            "blue_green:",
            _line("  idle: warm", "warm: a rollback is a Caddy switch | stop: the old colour stops"),
            _line(f"  # blue_port: {port + 1}", "defaults: backend.port + 1 and + 2"),
            f"  # green_port: {port + 2}",
        ]
    out += ["", "frontend:"]
    if c.frontend == "static":
        where = "inside the image (/app)" if c.image else "inside the release"
        out += [
            _line("  mode: static", "Caddy serves the built files | dev-server: a unit + proxy"),
            _line("  static_dir: frontend/dist", where),
        ]
    else:
        out += [
            _line("  mode: dev-server", "a unit runs the dev server; Caddy proxies to it"),
            _line("  dev_command: bin/frontend-dev --port 3000", "from the release folder, no shell"),
            _line("  dev_port: 3000", "the port dev_command listens on"),
        ]
    listens = (
        "the colours listen on port + 1 and + 2"
        if c.strategy == "blue-green"
        else "where the backend listens, on 127.0.0.1"
    )
    out += [
        "",
        "backend:",
        _line(
            f"  command: bin/{app} --port {{port}}", "from the release folder, no shell; {port} = the port"
        ),
        _line(f"  port: {port}", listens),
        _line("  health: /health", "must answer 200 before traffic moves to a new release"),
        _line(f"  # user: {app}", "run as this system user, not root (it must exist)"),
        "",
        "health:",
        _line("  timeout: 30", "seconds a started release gets to become healthy"),
        _line("  passes: 2", "consecutive good answers needed"),
        _line("  expect_version: true", "the answer must name the release version; false if it does not"),
        "",
        "proxy:",
        _line('  site: ":80"', "Caddy site address; a domain (app.example.com) gets HTTPS"),
        "",
        "data:",
        _line(f"  sqlite: {db}", "snapshotted (online backup) before the backend leaves a release"),
        "",
        _line("env:", "the backend's environment (an EnvironmentFile, mode 0640)"),
        _line(f"  DATABASE_PATH: {db}", "the same file as data.sqlite: the one the app opens"),
        _line("  # API_TOKEN: ${DEPLOY_API_TOKEN}", "from the environment of whoever runs reconcile: secret"),
        "  # SIGNING_KEY: {from_age: secrets/prod.env.age, key: SIGNING_KEY}",
        _line("  #", "committed encrypted with age; decrypted with the key in"),
        _line("  #", "~/.config/reconciler/age.key (see the README)"),
        "",
        _line("# notify:", "webhooks told about deploys, rollbacks and failures"),
        "#   - url: ${SLACK_WEBHOOK_URL}",
        "#     format: slack",
    ]
    return "\n".join(out) + "\n"


def _refusal(c: Choices) -> str | None:
    """The combinations the contract refuses, said in options."""
    if c.frontend == "dev-server" and c.strategy == "blue-green":
        return (
            "--frontend dev-server with --strategy blue-green: blue-green switches a static frontend "
            "together with the backend; use --strategy restart or symlink-swap for a dev server"
        )
    if c.frontend == "dev-server" and c.image:
        return (
            "--frontend dev-server with --image: an image release serves its frontend statically; use "
            "--frontend static, or write the file without --image and set frontend.image to the dev "
            "server's own image"
        )
    return None


def _default_app(folder: Path) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", folder.resolve().name.lower()).strip("-")
    return name[:31] if re.match(r"^[a-z][a-z0-9-]{0,30}", name) else ""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reconcile init",
        description="Write a commented desired-state.yaml for an app, one that validates as written.",
    )
    p.add_argument(
        "name", nargs="?", metavar="APP", help="the app's name, as --app (`reconcile init choiros`)"
    )
    p.add_argument(
        "--app", help="the app's name (default: this folder's name): /opt/NAME, NAME-backend.service, ..."
    )
    p.add_argument("--target", default="local", help="local (default) or ssh://[user@]host[:port]")
    p.add_argument(
        "--strategy",
        choices=["restart", "symlink-swap", "blue-green"],
        default="symlink-swap",
        help="how a release replaces the one serving (default: symlink-swap)",
    )
    p.add_argument(
        "--frontend", choices=["static", "dev-server"], default="static", help="how the frontend is served"
    )
    p.add_argument("--image", metavar="IMAGE", help="run the backend from this container image, not a folder")
    p.add_argument(
        "-f",
        "--file",
        default=os.environ.get("RECONCILER_FILE", "desired-state.yaml"),
        help="where to write (default: ./desired-state.yaml, or $RECONCILER_FILE)",
    )
    p.add_argument("--force", action="store_true", help="overwrite the file if it exists")
    return p


_OPTIONS = {"app": "--app", "target": "--target", "release.image": "--image", "release.version": "--image"}


def run_init(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.name and args.app and args.name != args.app:
        parser.error(f"two app names: {args.name!r} and --app {args.app!r}; give one")
    file = Path(args.file)
    # The project is the folder init runs in, wherever the file goes (-f deploy/prod.yaml).
    app = args.app or args.name or _default_app(Path.cwd())
    if not app:
        folder = Path.cwd().name
        print(
            f"error: cannot make an app name out of the folder {folder!r}; name it: reconcile init NAME",
            file=sys.stderr,
        )
        return 1
    choices = Choices(app, args.target, args.strategy, args.frontend, args.image)
    refused = _refusal(choices)
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 1
    text = render(choices)
    checked = check_bytes(
        text.encode(), str(file), base_dir=file.resolve().parent, checks=Checks(offline=True)
    )
    if checked.errors:
        for problem in checked.errors:
            option = (
                "APP"
                if problem.field == "app" and not args.app
                else _OPTIONS.get(problem.field, problem.field)
            )
            hint = f"; {problem.hint}" if problem.hint else ""
            print(f"error: {option}: {problem.message}{hint}", file=sys.stderr)
        return 1
    exists = f"error: {file} exists; nothing was written (--force overwrites it)"
    if file.exists() and not args.force:
        print(exists, file=sys.stderr)
        return 1
    tmp = file.with_name(f".{file.name}.init-{os.getpid()}")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        if args.force:
            tmp.replace(file)  # whole or not at all
        else:
            # A link fails if the name appeared since the check above: a file another run or
            # an editor wrote in between is never replaced.
            os.link(tmp, file)
    except FileExistsError:
        print(exists, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot write {file}: {exc.strerror}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    print(_next_steps(choices, file))
    return 0


def _next_steps(c: Choices, file: Path) -> str:
    flag = "" if str(file) == "desired-state.yaml" else f" -f {file}"
    frontend = "static frontend" if c.frontend == "static" else "dev-server frontend"
    if c.image:
        build = (
            f"push {c.image} to its registry (pin it with release.digest; a private registry needs "
            "registry_auth), and make sure it answers /health"
        )
        steps = [(f"reconcile validate{flag}", "check the file and its secrets")]
    else:
        inside = "frontend/dist" if c.frontend == "static" else "bin/frontend-dev"
        build = (
            f"build the release into {c.source} (bin/{c.app} and {inside} inside), "
            "or point release.source at your build"
        )
        steps = [
            (f"reconcile validate --offline{flag}", "check the file before the build"),
            (f"reconcile validate{flag}", "and after: the release, what is inside it, the secrets"),
        ]
    steps += [
        (f"reconcile --once --dry-run{flag}", "what would change on the host, and why"),
        (f"reconcile --once{flag}", f"deploy; then commit {file.name}"),
    ]
    width = max(len(command) for command, _ in steps) + 3
    lines = [f"wrote {file}: {c.app} {c.version}, {c.strategy}, {frontend}, target {c.target}", "next:"]
    lines.append(f"  1. {build}")
    lines += [f"  {n}. {command.ljust(width)}{what}" for n, (command, what) in enumerate(steps, 2)]
    return "\n".join(lines)
