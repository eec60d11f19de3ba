"""A directory tree beside the workspace that no host-side operation may change.

Its snapshot records, for every path, the kind, mode, inode, link count, size, mtime and
content hash (link target for links), plus the directories' own metadata, so a write, a
delete, a chmod, a new entry or a write through a hard link all show up.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

Entry = tuple[int, int, int, int, int, str]


def snapshot(root: Path) -> dict[str, Entry]:
    """Metadata and content of every path below and including ``root`` (links not followed)."""
    out: dict[str, Entry] = {}
    stack = [root]
    while stack:
        current = stack.pop()
        st = os.lstat(current)
        if stat.S_ISREG(st.st_mode):
            content = hashlib.sha256(current.read_bytes()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            content = "-> " + os.readlink(current)
        else:
            content = ""
        key = str(current.relative_to(root)) if current != root else "."
        out[key] = (st.st_mode, st.st_ino, st.st_nlink, st.st_size, st.st_mtime_ns, content)
        if stat.S_ISDIR(st.st_mode):
            stack.extend(current / name for name in os.listdir(current))
    return out


@dataclass
class Sentinel:
    """The tree and its snapshot; :meth:`assert_unchanged` compares the two."""

    root: Path
    taken: dict[str, Entry] = field(default_factory=dict)

    @classmethod
    def make(cls, root: Path) -> Sentinel:
        """A small tree with files, a subdirectory, a link, a hard link and a policy file."""
        (root / "sub").mkdir(parents=True)
        (root / "file.txt").write_text("outside\n")
        (root / "f").write_text("outside f\n")
        (root / "sub" / "g").write_text("outside g\n")
        (root / "vigil.toml").write_text('[policy]\nprotected = ["prod"]\n')
        os.symlink("file.txt", root / "link")
        os.link(root / "file.txt", root / "hard.txt")
        sentinel = cls(root)
        sentinel.refresh()
        return sentinel

    def refresh(self) -> None:
        """Take the snapshot again (after the test itself changed the tree on purpose)."""
        self.taken = snapshot(self.root)

    def assert_unchanged(self, *, link_counts: bool = True) -> None:
        """Fail naming every path that changed, appeared or vanished.

        ``link_counts=False`` ignores link counts: a test that hard-linked an outside file
        into the workspace sees the count drop when vigil replaces (not writes) its copy.
        """
        now = snapshot(self.root)

        def view(entry: Entry | None) -> object:
            if entry is None or link_counts:
                return entry
            return entry[:2] + entry[3:]

        keys = self.taken.keys() | now.keys()
        changed = sorted(k for k in keys if view(self.taken.get(k)) != view(now.get(k)))
        assert not changed, f"outside the workspace changed: {changed}"
