"""Turn what an attempt did into a :class:`Changeset`.

Two sources give the same result: an overlay upper directory (overlay mode), or two scans
of the workspace taken before and after the attempt (snapshot mode).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Mapping
from pathlib import Path

from vigil.workspace.changeset import ChangeEntry, Changeset, IgnoreRules
from vigil.workspace.objects import ObjectStore
from vigil.workspace.state import FileState, is_excluded, state_of
from vigil.workspace.view import StackedView

_OPAQUE = "user.overlay.opaque"


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)


def _is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, _OPAQUE, follow_symlinks=False) == b"y"
    except OSError:
        return False


class _Collector:
    def __init__(self, lower: StackedView, objects: ObjectStore) -> None:
        self.lower = lower
        self.objects = objects
        self.entries: dict[str, ChangeEntry] = {}

    def record(self, rel: str, before: FileState | None, after: FileState | None) -> None:
        if before == after:
            return
        if before is not None and before.kind == "file" and before.sha256 is not None:
            source = self.lower.source(rel)
            if not self.objects.has(before.sha256) and source is not None:
                self.objects.put_file(source, before.sha256)
        self.entries[rel] = ChangeEntry(rel, before, after)

    def delete_tree(self, rel: str, *, keep_top: bool = False) -> None:
        """Record the deletion of ``rel`` and, if it was a directory, all below it."""
        before = self.lower.state(rel)
        if before is None:
            return
        if before.kind == "dir":
            for child in self.lower.descendants(rel):
                self.record(child, self.lower.state(child), None)
        if not keep_top:
            self.record(rel, before, None)


def capture_upper(
    upper: Path,
    lower: StackedView,
    objects: ObjectStore,
    ignore: IgnoreRules,
    exclude: Collection[str] = (),
) -> Changeset:
    """The changeset recorded in an overlayfs upper directory over ``lower``."""
    out = _Collector(lower, objects)
    stack: list[tuple[str, bool]] = [("", False)]
    while stack:
        rel_dir, opaque = stack.pop()
        abs_dir = upper / rel_dir if rel_dir else upper
        names = sorted(os.listdir(abs_dir))
        present = {f"{rel_dir}/{n}" if rel_dir else n for n in names}
        for child in lower.children(rel_dir):
            # An opaque directory hides everything below it in the lower layers; a path a
            # stacked layer put in the upper directory vanishes without a whiteout.
            if child not in present and (opaque or child in lower.overrides):
                out.delete_tree(child)
        for name in names:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if is_excluded(rel, exclude):
                continue
            path = abs_dir / name
            st = path.lstat()
            if _is_whiteout(st):
                out.delete_tree(rel)
                continue
            after = state_of(path, st)
            if after is None:
                continue
            before = lower.state(rel)
            new_content = before is None or before.sha256 != after.sha256
            if after.kind == "file" and after.sha256 is not None and new_content:
                objects.put_file(path, after.sha256)
            if before is not None and before.kind == "dir" and after.kind != "dir":
                out.delete_tree(rel, keep_top=True)
            out.record(rel, before, after)
            if after.kind == "dir":
                hides_lower = opaque or _is_opaque(path) or before is None or before.kind != "dir"
                stack.append((rel, hides_lower))
    return Changeset(ignore.flag(out.entries.values()))


def diff_states(
    before: Mapping[str, FileState], after: Mapping[str, FileState], ignore: IgnoreRules
) -> Changeset:
    """The changeset between two scans of the same tree (both images already stored)."""
    entries = []
    for rel in before.keys() | after.keys():
        old, new = before.get(rel), after.get(rel)
        if old != new:
            entries.append(ChangeEntry(rel, old, new))
    return Changeset(ignore.flag(entries))


def store_images(root: Path, states: Mapping[str, FileState], objects: ObjectStore) -> None:
    """Copy the content of every file in ``states`` (read from ``root``) into ``objects``."""
    for rel, st in states.items():
        if st.kind == "file" and st.sha256 is not None and not objects.has(st.sha256):
            objects.put_file(root / rel, st.sha256)
