"""The app's SQLite database: a snapshot when the backend leaves a release, and the snapshot
of the release it moves back to restored, when data.restore_on_rollback asks for it."""

from __future__ import annotations

from reconciler.observe.snapshot import Observed
from reconciler.plan.actions import Action, RestoreDatabase, SnapshotDatabase
from reconciler.spec.model import DesiredState


def snapshot_path(desired: DesiredState, version: str) -> str:
    return f"{desired.layout.state}/snapshots/{version}.sqlite"


def data_actions(
    desired: DesiredState, observed: Observed, backend_units: list[str], leaving: set[str]
) -> list[Action]:
    """`leaving`: the releases the backend stops serving in this plan."""
    data = desired.data
    if data.sqlite is None:
        return []
    version = desired.release.version
    leaving = leaving - {version}
    out: list[Action] = []
    if data.snapshot:
        out += [
            SnapshotDatabase(
                f"the backend leaves release {old}: keep its data as it was",
                database=data.sqlite,
                snapshot=snapshot_path(desired, old),
            )
            for old in sorted(leaving)
        ]
    if data.restore_on_rollback and leaving and version in observed.snapshots:
        out.append(
            RestoreDatabase(
                f"moving back to {version}: its data as it was when it was left (data.restore_on_rollback)",
                database=data.sqlite,
                snapshot=snapshot_path(desired, version),
                units=tuple(backend_units),
            )
        )
    return out
