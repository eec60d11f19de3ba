"""What one path in a tree holds, read without following symlinks, and whole-tree scans."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Kind = Literal["file", "symlink", "dir"]


@dataclass(frozen=True)
class FileState:
    """The content of one path: a file (hash, size), a symlink (target) or a directory."""

    kind: Kind
    mode: int = 0
    sha256: str | None = None
    size: int = 0
    target: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; omits fields that do not apply to the kind."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind != "symlink":
            out["mode"] = self.mode
        if self.kind == "file":
            out["sha256"] = self.sha256
            out["size"] = self.size
        if self.kind == "symlink":
            out["target"] = self.target
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileState:
        """Inverse of :meth:`to_dict`."""
        return cls(
            kind=data["kind"],
            mode=int(data.get("mode", 0)),
            sha256=data.get("sha256"),
            size=int(data.get("size", 0)),
            target=data.get("target"),
        )


def file_sha256(path: Path) -> str:
    """Hex sha256 of a regular file's bytes."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def state_of(path: Path, st: os.stat_result | None = None) -> FileState | None:
    """The state at ``path``, or None if nothing (or something we do not track) is there."""
    if st is None:
        try:
            st = path.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return None
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISREG(st.st_mode):
        return FileState("file", mode, file_sha256(path), st.st_size)
    if stat.S_ISLNK(st.st_mode):
        return FileState("symlink", target=os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return FileState("dir", mode)
    # Sockets, fifos and device nodes are runtime artefacts, not project content.
    return None


def is_excluded(rel: str, exclude: Collection[str]) -> bool:
    """Whether workspace-relative ``rel`` is, or lies under, one of ``exclude``."""
    return any(rel == e or rel.startswith(e + "/") for e in exclude)


def walk(root: Path, exclude: Collection[str] = ()) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Every path under ``root`` (not root itself) as (relative posix path, path, lstat)."""
    stack = [("", root)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        with os.scandir(abs_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if is_excluded(rel, exclude):
                continue
            st = entry.stat(follow_symlinks=False)
            yield rel, Path(entry.path), st
            if stat.S_ISDIR(st.st_mode):
                stack.append((rel, Path(entry.path)))


def scan(root: Path, exclude: Collection[str] = ()) -> dict[str, FileState]:
    """The state of every tracked path under ``root``, keyed by relative posix path."""
    out: dict[str, FileState] = {}
    for rel, path, st in walk(root, exclude):
        state = state_of(path, st)
        if state is not None:
            out[rel] = state
    return out


def tree_hash(root: Path, exclude: Collection[str] = (".vigil",)) -> str:
    """One hash over the paths, kinds, modes, contents and link targets of a tree."""
    digest = hashlib.sha256()
    for rel, state in sorted(scan(root, exclude).items()):
        digest.update(repr((rel, state.kind, state.mode, state.sha256, state.target)).encode())
        digest.update(b"\0")
    return digest.hexdigest()
