"""The tree an attempt starts from: the workspace with uncommitted changesets stacked on top.

A dry run lets a task see its dependencies' changes before anything is committed. The
view answers "what was here before this attempt" for capture, and materialises each
changeset as an overlay lower layer (whiteouts for deletions) so the kernel shows the same.

The workspace is read beneath its root without following links
(:mod:`vigil.workspace.beneath`): a path below a parent that is now a link reads as
absent, and the commit's own checks then report the conflict.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Collection, Sequence
from pathlib import Path

from vigil.workspace.beneath import Blocked, Tree, UnsafePath, components
from vigil.workspace.changeset import Changeset
from vigil.workspace.errors import Conflict
from vigil.workspace.limits import Limits
from vigil.workspace.objects import ObjectStore
from vigil.workspace.protect import Protection
from vigil.workspace.removal import remove_tree
from vigil.workspace.state import FileState, is_excluded, state_at

_OPAQUE = "user.overlay.opaque"


class StackedView:
    """Path states of ``root`` with ``layers`` (oldest first) applied over it.

    ``protection`` and ``limits`` travel with the view to the capture of the attempt
    that starts from it.
    """

    def __init__(
        self,
        root: Path,
        layers: Sequence[Changeset] = (),
        exclude: Collection[str] = (),
        *,
        protection: Protection | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.root = root
        self.exclude = exclude
        self.protection = protection
        self.limits = limits or Limits()
        self.overrides: dict[str, FileState | None] = {}
        for cs in layers:
            for entry in cs.entries:
                self.overrides[entry.path] = entry.after

    def state(self, rel: str) -> FileState | None:
        """What the attempt saw at ``rel`` when it started."""
        if is_excluded(rel, self.exclude):
            return None
        if rel in self.overrides:
            return self.overrides[rel]
        try:
            with Tree(self.root) as tree:
                return state_at(tree, rel)
        except (Blocked, UnsafePath):
            return None

    def store(self, rel: str, objects: ObjectStore, sha256: str) -> None:
        """Copy the workspace's content at ``rel`` into ``objects`` (links never followed)."""
        if rel in self.overrides or objects.has(sha256):
            return
        try:
            with Tree(self.root) as tree:
                fd = tree.open_file(rel)
        except (Blocked, UnsafePath, FileNotFoundError):
            return  # gone or replaced since it was read: the commit's check reports it
        try:
            objects.put_fd(fd)
        finally:
            os.close(fd)

    def children(self, rel: str) -> list[str]:
        """Relative paths of the entries directly inside directory ``rel``."""
        names: set[str] = set()
        if rel not in self.overrides:
            with contextlib.suppress(OSError, UnsafePath), Tree(self.root) as tree:
                names.update(tree.listdir(rel))
        prefix = f"{rel}/" if rel else ""
        out = set()
        for name in names:
            out.add(prefix + name)
        for path in self.overrides:
            if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                out.add(path)
        return sorted(
            p
            for p in out
            if not is_excluded(p, self.exclude) and self.overrides.get(p, True) is not None
        )

    def descendants(self, rel: str) -> list[str]:
        """Every path below directory ``rel``, deepest last."""
        out: list[str] = []
        stack = [rel]
        while stack:
            current = stack.pop()
            for child in self.children(current):
                st = self.state(child)
                if st is None:
                    continue
                out.append(child)
                if st.kind == "dir":
                    stack.append(child)
        return out


def materialise(changeset: Changeset, objects: ObjectStore, dest: Path, below: StackedView) -> None:
    """Write ``changeset`` as an overlayfs layer (userxattr whiteouts) at ``dest``.

    Built in a temporary directory and renamed, so a crash never leaves half a layer.
    Every path is created beneath the layer without following links: stacked changes in
    which one makes a link and another writes below it are a conflict, never followed.
    """
    if dest.exists():
        return
    tmp = dest.with_name(dest.name + ".building")
    remove_tree(tmp)
    tmp.mkdir(parents=True)
    covered: list[str] = []
    modes: dict[str, int] = {}
    with Tree(tmp) as tree:
        for entry in changeset.entries:
            if any(entry.path.startswith(c + "/") for c in covered):
                continue
            try:
                _put(tree, entry.path, entry.after, entry.before, objects, below, modes)
            except (Blocked, UnsafePath) as exc:
                raise Conflict(
                    f"the changes stacked under this attempt disagree at {entry.path}: {exc}",
                    "Run the tasks that change this path one after the other (`needs`).",
                    details=[entry.path],
                ) from None
            if entry.after is None:
                covered.append(entry.path)
        # Directory modes last, deepest first: a read-only directory gets its children first.
        for rel in sorted(modes, key=lambda p: p.count("/"), reverse=True):
            tree.chmod(rel, modes[rel])
    os.replace(tmp, dest)


def _put(
    tree: Tree,
    rel: str,
    after: FileState | None,
    before: FileState | None,
    objects: ObjectStore,
    below: StackedView,
    modes: dict[str, int],
) -> None:
    _make_parents(tree, rel, below, modes)
    if after is None:
        with tree.parent(rel) as (fd, name):
            os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=fd)
    elif after.kind == "dir":
        tree.mkdir(rel, 0o700)
        modes[rel] = after.mode
        if before is not None and before.kind != "dir":
            with tree.parent(rel) as (fd, name):
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                dfd = os.open(name, flags, dir_fd=fd)
                try:
                    os.setxattr(dfd, _OPAQUE, b"y")
                finally:
                    os.close(dfd)
    elif after.kind == "symlink":
        tree.symlink(rel, after.target or "")
    else:
        sha = after.sha256 or ""
        tree.write_file(rel, lambda fd: objects.copy_into(sha, fd), after.mode, after.mtime_ns)


def _make_parents(tree: Tree, rel: str, below: StackedView, modes: dict[str, int]) -> None:
    parts = components(rel)[:-1]
    for i in range(len(parts)):
        sub = "/".join(parts[: i + 1])
        st = tree.lstat(sub)
        if st is None:
            tree.mkdir(sub, 0o700)
            # The top layer's directory attributes win, so copy what lies below.
            seen = below.state(sub)
            modes[sub] = seen.mode if seen is not None and seen.kind == "dir" else 0o755
        elif not stat.S_ISDIR(st.st_mode):
            raise Blocked(sub, "symbolic link" if stat.S_ISLNK(st.st_mode) else "file")
