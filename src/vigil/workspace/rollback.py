"""Undo committed changesets: restore pre-images newest first, refusing to clobber drift."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vigil.words import plural
from vigil.workspace.apply import Applier, locked, mismatches
from vigil.workspace.beneath import Blocked, Tree, UnsafePath
from vigil.workspace.changeset import Changeset, compose
from vigil.workspace.errors import Drift
from vigil.workspace.state import FileState, state_at


def _at_target(tree: Tree, rel: str, target: FileState | None) -> bool:
    try:
        return state_at(tree, rel) == target
    except (Blocked, UnsafePath):
        return False


@dataclass(frozen=True)
class RollbackResult:
    """What a rollback restored, and which drifted paths it overwrote because it was forced."""

    restored: list[str] = field(default_factory=list)
    overwritten: list[str] = field(default_factory=list)


def _selected(changeset: Changeset, paths: Collection[str] | None) -> Changeset:
    if paths is None:
        return changeset
    wanted = [p.strip("/") for p in paths]
    keep = [
        e
        for e in changeset.entries
        if any(w == "" or e.path == w or e.path.startswith(w + "/") for w in wanted)
    ]
    return Changeset(tuple(keep))


def rollback(
    applier: Applier,
    root: Path,
    changesets: Sequence[Changeset],
    *,
    paths: Collection[str] | None = None,
    force: bool = False,
) -> RollbackResult:
    """Restore the state before ``changesets`` (given oldest first) for ``paths`` or all.

    Every path must still hold what vigil committed; otherwise nothing is restored and
    :class:`Drift` lists all drifted paths, unless ``force`` is set.
    """
    # Undoing newest first, path by path, composes to one changeset from the newest
    # post-image back to the oldest pre-image; applying that once is crash-safe as a unit.
    undo = compose([_selected(cs, paths).inverse() for cs in reversed(changesets)])
    with locked(applier.lock_file):
        targets = {e.path: e.after for e in undo.entries}
        with Tree(root) as tree:
            drifted = [
                p
                for p in mismatches(root, undo, expect="before")
                # A path already back at its pre-image (an earlier partial rollback) is fine.
                if p not in targets or not _at_target(tree, p, targets[p])
            ]
        if drifted and not force:
            shown = ", ".join(drifted[:5]) + (" ..." if len(drifted) > 5 else "")
            raise Drift(
                f"{plural(len(drifted), 'path')} changed since vigil committed them: {shown}",
                details=drifted,
            )
        applier.apply(undo, purpose="rollback")
    return RollbackResult(restored=undo.paths, overwritten=drifted if force else [])
