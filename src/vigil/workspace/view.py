"""The tree an attempt starts from: the workspace with uncommitted changesets stacked on top.

A dry run lets a task see its dependencies' changes before anything is committed. The
view answers "what was here before this attempt" for capture, and materialises each
changeset as an overlay lower layer (whiteouts for deletions) so the kernel shows the same.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Collection, Sequence
from pathlib import Path

from vigil.workspace.changeset import Changeset
from vigil.workspace.objects import ObjectStore
from vigil.workspace.state import FileState, is_excluded, state_of

_OPAQUE = "user.overlay.opaque"


class StackedView:
    """Path states of ``root`` with ``layers`` (oldest first) applied over it."""

    def __init__(
        self, root: Path, layers: Sequence[Changeset] = (), exclude: Collection[str] = ()
    ) -> None:
        self.root = root
        self.exclude = exclude
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
        return state_of(self.root / rel)

    def source(self, rel: str) -> Path | None:
        """A real file holding the content at ``rel``, if it comes from the workspace."""
        return None if rel in self.overrides else self.root / rel

    def children(self, rel: str) -> list[str]:
        """Relative paths of the entries directly inside directory ``rel``."""
        names: set[str] = set()
        if rel not in self.overrides:
            base = self.root / rel if rel else self.root
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                names.update(os.listdir(base))
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
    """
    if dest.exists():
        return
    tmp = dest.with_name(dest.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    covered: list[str] = []
    for entry in changeset.entries:
        if any(entry.path.startswith(c + "/") for c in covered):
            continue
        target = tmp / entry.path
        _make_parents(tmp, entry.path, below)
        after = entry.after
        if after is None:
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            covered.append(entry.path)
        elif after.kind == "dir":
            target.mkdir(exist_ok=True)
            os.chmod(target, after.mode)
            if entry.before is not None and entry.before.kind != "dir":
                os.setxattr(target, _OPAQUE, b"y")
        elif after.kind == "symlink":
            os.symlink(after.target or "", target)
        else:
            objects.copy_to(after.sha256 or "", target)
            os.chmod(target, after.mode)
    os.replace(tmp, dest)


def _make_parents(layer: Path, rel: str, below: StackedView) -> None:
    parts = rel.split("/")[:-1]
    for i in range(len(parts)):
        sub = "/".join(parts[: i + 1])
        path = layer / sub
        if not path.exists():
            path.mkdir()
            # The top layer's directory attributes win, so copy what lies below.
            st = below.state(sub)
            os.chmod(path, st.mode if st is not None and st.kind == "dir" else 0o755)
