"""Command line: python -m tests.testhost {build,boot,cleanup}.

build    build (or confirm) the cached rootfs and print how long it took
boot     boot one host, show how to reach it, tear it down (--keep: wait for Ctrl-C)
         (both take --release bookworm|bullseye|docker|jammy; bookworm is the default)
cleanup  remove leftovers of crashed runs (only things this harness made) and
         rootfs caches of other recipes that no running host uses
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import time

from tests.testhost import lifecycle
from tests.testhost.errors import TesthostError
from tests.testhost.host import boot
from tests.testhost.releases import cache_entry, ensure_rootfs, names
from tests.testhost.rootfs import DEFAULT_RELEASE
from tests.testhost.teardown import cleanup, remove_outdated_rootfs


def _build(args: argparse.Namespace) -> int:
    started = time.monotonic()
    cached = (cache_entry(release=args.release) / "manifest.json").is_file() and not args.force
    rootfs = ensure_rootfs(args.release, force=args.force)
    elapsed = time.monotonic() - started
    print(f"rootfs: {rootfs}")
    print(f"{'cache hit' if cached else 'built'} in {elapsed:.1f} s")
    return 0


def _boot(args: argparse.Namespace) -> int:
    started = time.monotonic()
    with boot(args.index, timeout=args.timeout, release=args.release) as host:
        booted = time.monotonic() - started
        state = host.exec(["systemctl", "is-system-running"], check=False).stdout.strip()
        print(f"name:        {host.name} ({host.release}, python: {host.python})")
        print(f"address:     {host.address} (this machine: {host.gateway} on {host.veth})")
        print(f"ssh target:  {host.ssh_target}")
        print(f"ssh key:     {host.key_path}")
        print(f"known_hosts: {host.known_hosts}")
        print(f"share:       {host.share} -> /share")
        print(f"log:         {host.log_path}")
        print(f"system:      {state}")
        print(f"booted in    {booted:.2f} s (incl. rootfs check)")
        print(f"ssh:         {shlex.join(host.ssh_command())}")
        sys.stdout.flush()
        if args.keep:
            print("keeping the host; Ctrl-C (or SIGTERM) stops it", flush=True)
            try:
                while not host.stopped:
                    signal.pause()
            except KeyboardInterrupt:
                print("\nstopping", flush=True)
        stop_started = time.monotonic()
    print(f"stopped in   {time.monotonic() - stop_started:.2f} s")
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    report = cleanup(force=args.force)
    report += [f"removed outdated rootfs cache {p}" for p in remove_outdated_rootfs()]
    for line in report:
        print(line)
    if not report:
        print("nothing to clean up")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.testhost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log build steps")
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build/refresh the cached rootfs")
    p_build.add_argument("--force", action="store_true", help="rebuild even if cached")
    p_build.add_argument("--release", choices=names(), default=DEFAULT_RELEASE, help="release")
    p_build.set_defaults(func=_build)
    p_boot = sub.add_parser("boot", help="boot one host and show how to reach it")
    p_boot.add_argument("--keep", action="store_true", help="keep it running until Ctrl-C")
    p_boot.add_argument("--index", type=int, default=None, help="subnet index (default: free one)")
    p_boot.add_argument("--timeout", type=float, default=60, help="boot timeout in seconds")
    p_boot.add_argument("--release", choices=names(), default=DEFAULT_RELEASE, help="release")
    p_boot.set_defaults(func=_boot)
    p_clean = sub.add_parser("cleanup", help="remove leftovers of crashed runs")
    p_clean.add_argument(
        "--force", action="store_true", help="also remove hosts that a running process still holds"
    )
    p_clean.set_defaults(func=_cleanup)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.command == "build" else logging.WARNING,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args))
    except TesthostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        lifecycle.stop_all()


if __name__ == "__main__":
    sys.exit(main())
