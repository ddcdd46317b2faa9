"""strategy: restart and symlink-swap. One backend unit runs the release named in its unit;
`current` (and, for symlink-swap, `previous`) name the releases for people and tools. A
change restarts the backend in place, gates it, then points Caddy at the new frontend."""

from __future__ import annotations

import posixpath

from reconciler.observe.snapshot import Observed, unit_path
from reconciler.plan import (
    config,
    data,
    good,
    identity,
    images,
    proxy,
    releases,
    routing,
    services,
    tasks,
    units,
)
from reconciler.plan.actions import Action, CheckHealth, SetSymlink
from reconciler.plan.units import retire_file, retire_unit
from reconciler.spec.model import DesiredState

COLOURS = ("blue", "green")


class SingleSlot:
    def __init__(self, desired: DesiredState, runtime: str | None = None) -> None:
        self.desired = desired
        self.runtime = identity.runtime_for(desired, runtime) or "podman"
        self.config = identity.fingerprint(desired, runtime)
        self.release_dir = releases.release_dir(desired, desired.release.version)

    def texts(self) -> dict[str, str]:
        """Unit name -> file content, for the units this desired state runs."""
        return services.slot_texts(self.desired, self.runtime)

    def gates(self) -> dict[str, CheckHealth]:
        d = self.desired
        out = {d.backend_unit: units.backend_gate(d, d.backend_unit, d.backend.port, d.release.version)}
        if d.frontend.mode == "dev-server":
            out[d.frontend_unit] = units.frontend_gate(d)
        return out

    def caddy_text(self) -> str:
        d = self.desired
        static_root = images.static_root(d, self.release_dir)
        return proxy.render_fragment(d, d.backend.port, static_root)

    def actions(self, observed: Observed) -> list[Action]:
        d = self.desired
        texts, gates = self.texts(), self.gates()
        out: list[Action] = releases.upload_if_missing(d, observed)
        out += releases.shared_actions(d, observed)
        out += images.frontend_actions(d, observed)
        for name, text in texts.items():
            out += units.unit_file_actions(d, observed, name, text)
        out += config.env_file_actions(d, observed, d.layout.env_file, self.config)
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
        running = routing.serving_release(d, observed) or releases.running_release(
            observed.unit(d.backend_unit)
        )
        out += data.data_actions(d, observed, [d.backend_unit], {running} if running else set())
        spec = services.backend_spec(
            d, self.release_dir, d.backend.port, d.layout.env_file, runtime=self.runtime
        )
        out += tasks.task_actions(d, observed, spec, self.config, running, out)
        fragment = self.caddy_text()
        out += proxy.caddy_actions(d, observed, fragment)
        if d.frontend.mode != "dev-server":
            out += retire_unit(d, observed, d.frontend_unit, "the frontend is served as static files")
        for colour in COLOURS:
            why = "the strategy is not blue-green"
            out += retire_unit(d, observed, d.colour_unit(colour), why)
            out += retire_file(observed, d.colour_env_file(colour), why)
        parts = good.GoodParts(
            files={unit_path(d, name): text for name, text in texts.items()}
            | {d.layout.env_file: identity.env_text(d, self.config)},
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
