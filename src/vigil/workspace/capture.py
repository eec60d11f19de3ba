"""Turn what an attempt did into a :class:`Changeset`.

Two sources give the same result: an overlay upper directory (overlay mode), or two scans
of the workspace taken before and after the attempt (snapshot mode).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Mapping
from pathlib import Path

from vigil.errors import VigilError
from vigil.workspace.beneath import Tree, UnsafePath, components
from vigil.workspace.changeset import ChangeEntry, Changeset
from vigil.workspace.errors import ProtectedPathChanged
from vigil.workspace.ignore import MAX_RULES_FILE, IgnoreRules, Reader, read_beneath, tree_reader
from vigil.workspace.limits import Limits, Tally
from vigil.workspace.objects import ObjectStore
from vigil.workspace.protect import Protection, summary
from vigil.workspace.state import FileState, is_excluded, state_in, walk
from vigil.workspace.view import StackedView

_OPAQUE = "user.overlay.opaque"


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)


def _is_opaque(tree: Tree, rel: str) -> bool:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with tree.parent(rel) as (pfd, name):
            fd = os.open(name, flags, dir_fd=pfd)
            try:
                return os.getxattr(fd, _OPAQUE) == b"y"
            finally:
                os.close(fd)
    except OSError:
        return False


def precount(upper: Path, limits: Limits, exclude: Collection[str] = ()) -> None:
    """VIGIL-LIMIT if the upper directory alone holds more paths or bytes than allowed.

    Only ``lstat``: nothing is hashed or copied, and a walk over millions of files stops
    at the first one over the limit.
    """
    tally = limits.tally()
    for rel, _fd, _name, st in walk(upper, exclude):
        tally.path(rel)
        if stat.S_ISREG(st.st_mode):
            tally.content(rel, st.st_size)


def check_protected(changeset: Changeset, protection: Protection | None) -> None:
    """VIGIL-PROTECTED-PATH if ``changeset`` touches a protected path by name or link."""
    if protection is None:
        return
    refused = protection.refusals((e.path, e.after) for e in changeset.entries)
    if refused:
        raise ProtectedPathChanged(summary(refused), details=refused)


class _Collector:
    def __init__(self, lower: StackedView, objects: ObjectStore, tally: Tally) -> None:
        self.lower = lower
        self.objects = objects
        self.tally = tally
        self.entries: dict[str, ChangeEntry] = {}

    def record(self, rel: str, before: FileState | None, after: FileState | None) -> None:
        if before == after:
            return
        self.tally.path(rel)
        pre = before.sha256 if before is not None and before.kind == "file" else None
        if pre is not None and rel not in self.lower.overrides and not self.objects.has(pre):
            self.tally.content(rel, before.size if before is not None else 0)
            self.lower.store(rel, self.objects, pre)
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
    exclude: Collection[str] = (),
    *,
    protection: Protection | None = None,
    limits: Limits | None = None,
) -> Changeset:
    """The changeset recorded in an overlayfs upper directory over ``lower``.

    Limits (default: the view's) are checked before any content is copied into
    ``objects``; protected paths (default: the view's) are refused by name, link target
    and identity. Ignored paths are flagged by git's rules as the attempt left them (a
    deletion: as it found them).
    """
    limits = limits or lower.limits
    protection = protection if protection is not None else lower.protection
    precount(upper, limits, exclude)
    with Tree(upper) as tree:
        entries = _capture(tree, lower, objects, exclude, limits, protection)
    check_protected(Changeset(entries), protection)
    after = IgnoreRules.of(overlay_reader(upper, lower.root))
    return Changeset(after.flag(entries, before=IgnoreRules.of(view_reader(lower, objects))))


def _capture(
    tree: Tree,
    lower: StackedView,
    objects: ObjectStore,
    exclude: Collection[str],
    limits: Limits,
    protection: Protection | None,
) -> tuple[ChangeEntry, ...]:
    out = _Collector(lower, objects, limits.tally())
    stack: list[tuple[str, bool]] = [("", False)]
    while stack:
        rel_dir, opaque = stack.pop()
        dir_fd = tree.open_dir(rel_dir.split("/") if rel_dir else [])
        try:
            _capture_dir(tree, dir_fd, rel_dir, opaque, lower, objects, exclude, out, stack)
        finally:
            os.close(dir_fd)
    if protection is not None:
        for rel, entry in out.entries.items():
            after = entry.after
            if after is not None and after.kind == "file":
                st = tree.lstat(rel)
                reason = None if st is None else protection.identity_reason(rel, st)
                if reason is not None:
                    raise ProtectedPathChanged(summary([reason]), details=[rel])
    return tuple(out.entries.values())


def _capture_dir(
    tree: Tree,
    dir_fd: int,
    rel_dir: str,
    opaque: bool,
    lower: StackedView,
    objects: ObjectStore,
    exclude: Collection[str],
    out: _Collector,
    stack: list[tuple[str, bool]],
) -> None:
    names = sorted(tree.listdir(rel_dir))
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
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if _is_whiteout(st):
            out.delete_tree(rel)
            continue
        after = state_in(dir_fd, name, st)
        if after is None:
            continue
        before = lower.state(rel)
        new_content = before is None or before.sha256 != after.sha256
        stored = after.sha256 is None or objects.has(after.sha256)
        if after.kind == "file" and new_content and not stored:
            fd = tree.open_file(rel, st)
            try:
                objects.put_fd(fd)
            finally:
                os.close(fd)
        if before is not None and before.kind == "dir" and after.kind != "dir":
            out.delete_tree(rel, keep_top=True)
        out.record(rel, before, after)
        if after.kind == "dir":
            hides_lower = opaque or _is_opaque(tree, rel) or before is None or before.kind != "dir"
            stack.append((rel, hides_lower))


def diff_states(
    before: Mapping[str, FileState],
    after: Mapping[str, FileState],
    ignore: IgnoreRules,
    *,
    ignore_before: IgnoreRules | None = None,
) -> Changeset:
    """The changeset between two scans of the same tree (both images already stored);
    ``ignore`` flags ignored paths, ``ignore_before`` (when given) deleted ones."""
    entries = []
    for rel in before.keys() | after.keys():
        old, new = before.get(rel), after.get(rel)
        if old != new:
            entries.append(ChangeEntry(rel, old, new))
    return Changeset(ignore.flag(entries, before=ignore_before))


def overlay_reader(upper: Path, lower: Path) -> Reader:
    """Read files as the attempt sees them: the upper directory's copy, nothing where the
    upper directory deleted the path (a whiteout on it, or an opaque or replaced
    directory above it), else the lower tree's. Nothing is followed in either tree."""
    read_lower = tree_reader(lower)

    def read(rel: str) -> bytes | None:
        try:
            parts = components(rel)
            with Tree(upper) as tree:
                hides_lower = False
                for i in range(len(parts)):
                    sub = "/".join(parts[: i + 1])
                    st = tree.lstat(sub)
                    if st is None:
                        return None if hides_lower else read_lower(rel)
                    if _is_whiteout(st):
                        return None
                    if i == len(parts) - 1:
                        return read_beneath(tree, sub)
                    if not stat.S_ISDIR(st.st_mode):
                        return None
                    hides_lower = hides_lower or _is_opaque(tree, sub)
        except (OSError, UnsafePath):
            return None
        return None

    return read


def view_reader(view: StackedView, objects: ObjectStore) -> Reader:
    """Read files as the attempt found them: the stacked changesets' content, else the
    workspace's (read beneath it without following links)."""
    read_root = tree_reader(view.root)

    def read(rel: str) -> bytes | None:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            above = "/".join(parts[:i])
            if above in view.overrides and getattr(view.overrides[above], "kind", None) != "dir":
                return None  # a stacked changeset deleted or replaced this directory
        if rel in view.overrides:
            return stored_content(view.overrides[rel], objects)
        return read_root(rel)

    return read


def states_reader(states: Mapping[str, FileState], objects: ObjectStore) -> Reader:
    """Read files of a scanned tree from the copies of their content in ``objects``."""
    return lambda rel: stored_content(states.get(rel), objects)


def stored_content(state: FileState | None, objects: ObjectStore) -> bytes | None:
    """The stored bytes of a small file, None for anything else or a damaged object."""
    if state is None or state.kind != "file" or state.sha256 is None:
        return None
    if state.size > MAX_RULES_FILE or not objects.has(state.sha256):
        return None
    try:
        return objects.read(state.sha256)
    except (OSError, VigilError):
        return None


def store_images(root: Path, states: Mapping[str, FileState], objects: ObjectStore) -> None:
    """Copy the content of every file in ``states`` (read beneath ``root``) into ``objects``."""
    with Tree(root) as tree:
        for rel, st in states.items():
            if st.kind == "file" and st.sha256 is not None and not objects.has(st.sha256):
                fd = tree.open_file(rel)
                try:
                    objects.put_fd(fd)
                finally:
                    os.close(fd)
