"""strategy: restart and symlink-swap. One backend unit runs the release named in its unit;
`current` (and, for symlink-swap, `previous`) name the releases for people and tools. A
change restarts the backend in place, gates it, then points Caddy at the new frontend."""

from __future__ import annotations

import posixpath
from dataclasses import replace

from reconciler.observe.snapshot import GoodState, Observed, unit_path
from reconciler.plan import config, data, good, images, proxy, releases, tasks, units
from reconciler.plan.actions import Action, CheckHealth, SetSymlink
from reconciler.plan.units import retire_file, retire_unit
from reconciler.render import units as unit_files
from reconciler.spec.model import DesiredState

COLOURS = ("blue", "green")


class SingleSlot:
    def __init__(self, desired: DesiredState) -> None:
        self.desired = desired
        self.config = config.fingerprint(desired)
        self.release_dir = releases.release_dir(desired, desired.release.version)

    def spec(self, observed: Observed) -> unit_files.ServiceSpec:
        """The backend's service, with what the host says an image runs with."""
        d = self.desired
        return units.backend_spec(
            d,
            self.release_dir,
            d.backend.port,
            d.layout.env_file,
            runtime=images.runtime_of(d, observed),
            run_as=images.run_as(d, observed),
        )

    def texts(self, observed: Observed) -> dict[str, str]:
        """Unit name -> file content, for the units this desired state runs."""
        d = self.desired
        out = {d.backend_unit: unit_files.render_service(self.spec(observed))}
        if d.frontend.mode == "dev-server":
            runtime, run_as = images.runtime_of(d, observed), images.run_as(d, observed)
            out[d.frontend_unit] = units.frontend_text(d, self.release_dir, runtime, run_as)
        return out

    def gates(self) -> dict[str, CheckHealth]:
        d = self.desired
        out = {d.backend_unit: units.backend_gate(d, d.backend_unit, d.backend.port, d.release.version)}
        if d.frontend.mode == "dev-server":
            out[d.frontend_unit] = units.frontend_gate(d)
        return out

    def caddy_text(self, maintenance: bool = False) -> str:
        d = self.desired
        static_root = images.static_root(d, self.release_dir)
        return proxy.render_fragment(d, d.backend.port, static_root, maintenance=maintenance)

    def actions(self, observed: Observed) -> list[Action]:
        d = self.desired
        texts, gates = self.texts(observed), self.gates()
        out: list[Action] = releases.upload_if_missing(d, observed)
        out += releases.shared_actions(d, observed)
        out += images.frontend_actions(d, observed)
        for name, text in texts.items():
            out += units.unit_file_actions(d, observed, name, text)
        out += config.env_file_actions(d, observed, d.layout.env_file)
        out += self._switch_current(observed)
        for name, text in texts.items():
            is_backend = name == d.backend_unit
            out += units.run_actions(
                d,
                observed,
                name,
                text,
                gates[name],
                config=self.config if is_backend else None,
                env_file=d.layout.env_file if is_backend else None,
            )
        running = releases.running_release(observed.unit(d.backend_unit))
        out += data.data_actions(d, observed, [d.backend_unit], {running} if running else set())
        out += tasks.task_actions(d, observed, self.spec(observed), self.config, running, out)
        fragment = self.caddy_text(observed.maintenance is not None)
        out += proxy.caddy_actions(d, observed, fragment, routes_to=tuple(gates))
        if d.frontend.mode != "dev-server":
            out += retire_unit(d, observed, d.frontend_unit, "the frontend is served as static files")
        for colour in COLOURS:
            why = "the strategy is not blue-green"
            out += retire_unit(d, observed, d.colour_unit(colour), why)
            out += retire_file(observed, d.colour_env_file(colour), why)
        parts = good.GoodParts(
            files={unit_path(d, name): text for name, text in texts.items()}
            | {d.layout.env_file: config.env_text(d)},
            links={d.layout.current: releases.relative(d, self.release_dir)},
            gates=gates,
            caddy_text=fragment,
        )
        out += good.record_actions(d, observed, parts, self.config)
        return out

    def _switch_current(self, observed: Observed) -> list[Action]:
        d = self.desired
        layout = d.layout
        want = self.release_dir
        now = releases.link_points_to(observed, layout.current)
        if now == want:
            return []
        out: list[Action] = []
        if d.strategy == "symlink-swap" and now is not None:
            prev_release = posixpath.basename(now)
            if (
                prev_release in observed.releases
                and releases.link_points_to(observed, layout.previous) != now
            ):
                out.append(
                    SetSymlink(
                        f"keep {prev_release} for instant rollback",
                        path=layout.previous,
                        target_path=releases.relative(d, now),
                    )
                )
        was = f"points to {posixpath.basename(now)}" if now else "does not exist"
        out.append(
            SetSymlink(
                f"current {was}; desired {d.release.version}",
                path=layout.current,
                target_path=releases.relative(d, want),
            )
        )
        return out

    def serving(self, observed: Observed) -> str | None:
        return releases.running_release(observed.unit(self.desired.backend_unit))

    def baseline(self, observed: Observed) -> GoodState | None:
        """The backend that serves now, as it is on disk, when nothing better is recorded: a
        host set up by hand, or by an older reconciler."""
        d = self.desired
        backend = observed.unit(d.backend_unit)
        version = releases.running_release(backend)
        if version is None or (backend.release is not None and version not in observed.releases):
            return None
        names = [n for n in (d.backend_unit, d.frontend_unit) if observed.unit(n).is_active]
        gate = units.backend_gate(d, d.backend_unit, d.backend.port, version)
        if version not in observed.releases:  # not one of ours: it names no version we know
            gate = replace(gate, expect_version=None, version_at=None)
            version = f"the setup found on the host ({backend.cwd})"
        return good.baseline(
            d,
            observed,
            version=version,
            config=backend.config or "",
            files=[*(unit_path(d, n) for n in names), d.layout.env_file],
            links=[d.layout.current],
            gates={d.backend_unit: gate.params()},
            strategy=d.strategy,
        )
