"""What one path in a tree holds, read without following symlinks, and whole-tree scans."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vigil.workspace.beneath import (
    KEPT_MODE,
    MAX_PATH,
    Blocked,
    Tree,
    listdir_fd,
    open_regular,
    sha256_fd,
)

Kind = Literal["file", "symlink", "dir"]


@dataclass(frozen=True)
class FileState:
    """The content of one path: a file (hash, size), a symlink (target) or a directory.

    ``mode`` holds only the permission bits in :data:`~vigil.workspace.beneath.KEPT_MODE`
    (no setuid, setgid, sticky or write-for-others), however the state was made: from a
    scan, a capture or a changeset read back from the store. So a step's extra bits are
    not part of its changes, a forged changeset cannot ask for them, and a comparison
    with the tree never sees them either.
    """

    kind: Kind
    mode: int = 0
    sha256: str | None = None
    size: int = 0
    target: str | None = None
    mtime_ns: int | None = field(default=None, compare=False)
    """A file's modification time, given back to it when vigil writes it (so tools that
    compare times, as Python does for its ``.pyc`` files, see the time the step left);
    never part of what a state is compared on."""

    def __post_init__(self) -> None:
        if self.mode & ~KEPT_MODE:
            object.__setattr__(self, "mode", self.mode & KEPT_MODE)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; omits fields that do not apply to the kind."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind != "symlink":
            out["mode"] = self.mode
        if self.kind == "file":
            out["sha256"] = self.sha256
            out["size"] = self.size
            if self.mtime_ns is not None:
                out["mtime_ns"] = self.mtime_ns
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
            mtime_ns=_mtime(data.get("mtime_ns")),
        )


def _mtime(value: Any) -> int | None:
    """A stored modification time, or None for one a file could not be given."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**62:
        return value
    return None


def file_sha256(path: Path) -> str:
    """Hex sha256 of a regular file's bytes (a symbolic link is refused, not followed)."""
    fd = open_regular(None, str(path))
    try:
        return sha256_fd(fd)
    finally:
        os.close(fd)


def _from_stat(
    st: os.stat_result, digest: Callable[[], str], target: Callable[[], str]
) -> FileState | None:
    mode = st.st_mode  # FileState keeps only the permission bits vigil writes
    if stat.S_ISREG(st.st_mode):
        return FileState("file", mode, digest(), st.st_size, mtime_ns=_mtime(st.st_mtime_ns))
    if stat.S_ISLNK(st.st_mode):
        return FileState("symlink", target=target())
    if stat.S_ISDIR(st.st_mode):
        return FileState("dir", mode)
    # Sockets, fifos and device nodes are runtime artefacts, not project content.
    return None


def state_in(dir_fd: int | None, name: str, st: os.stat_result) -> FileState | None:
    """The state of ``name`` in directory ``dir_fd`` whose lstat is ``st``; nothing followed."""

    def digest() -> str:
        fd = open_regular(dir_fd, name, st)
        try:
            return sha256_fd(fd)
        finally:
            os.close(fd)

    return _from_stat(st, digest, lambda: os.readlink(name, dir_fd=dir_fd))


def state_of(path: Path, st: os.stat_result | None = None) -> FileState | None:
    """The state at ``path``, or None if nothing (or something we do not track) is there.

    For trees vigil owns (an attempt's upper directory); the workspace is read with
    :func:`state_at`, which follows no link in any component.
    """
    if st is None:
        try:
            st = path.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return None
    return state_in(None, str(path), st)


def state_at(tree: Tree, rel: str) -> FileState | None:
    """The state at ``rel`` beneath ``tree``; :class:`Blocked` if a parent is not a directory."""
    try:
        with tree.parent(rel) as (fd, name):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            return state_in(fd, name, st)
    except FileNotFoundError:
        return None


def is_excluded(rel: str, exclude: Collection[str]) -> bool:
    """Whether workspace-relative ``rel`` is, or lies under, one of ``exclude``."""
    return any(rel == e or rel.startswith(e + "/") for e in exclude)


def walk(
    root: Path, exclude: Collection[str] = ()
) -> Iterator[tuple[str, int, str, os.stat_result]]:
    """Every path under ``root`` (not root itself) as (relative path, dir fd, name, lstat).

    Depth first, without recursion, one directory open at a time: a tree of any depth
    or width is walked. Each directory is opened beneath the root without following a
    link (:meth:`Tree.open_dir`), so one swapped for a link during the walk is skipped,
    never followed. A directory whose path is longer than
    :data:`~vigil.workspace.beneath.MAX_PATH` is yielded but not entered: callers that
    count paths (:class:`~vigil.workspace.limits.Tally`) refuse it first. The dir fd is
    valid until the next item.
    """
    with Tree(root) as tree:
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            try:
                fd = tree.open_dir(rel_dir.split("/") if rel_dir else [])
            except (FileNotFoundError, Blocked):
                continue  # gone, or no longer a directory, since it was listed
            try:
                for name in sorted(listdir_fd(fd)):
                    rel = f"{rel_dir}/{name}" if rel_dir else name
                    if is_excluded(rel, exclude):
                        continue
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    yield rel, fd, name, st
                    if stat.S_ISDIR(st.st_mode) and len(os.fsencode(rel)) <= MAX_PATH:
                        stack.append(rel)
            finally:
                os.close(fd)


def extra_bits(st: os.stat_result) -> int:
    """The mode bits of ``st`` that a :class:`FileState` leaves out (setuid, setgid,
    sticky, write-for-others); 0 for a symbolic link, whose mode means nothing."""
    return 0 if stat.S_ISLNK(st.st_mode) else stat.S_IMODE(st.st_mode) & ~KEPT_MODE


def scan(
    root: Path, exclude: Collection[str] = (), *, extra: dict[str, int] | None = None
) -> dict[str, FileState]:
    """The state of every tracked path under ``root``, keyed by relative posix path.

    ``extra``, if given, receives the :func:`extra_bits` of every path that has some.
    """
    out: dict[str, FileState] = {}
    for rel, fd, name, st in walk(root, exclude):
        state = state_in(fd, name, st)
        if state is not None:
            out[rel] = state
            if extra is not None and extra_bits(st):
                extra[rel] = extra_bits(st)
    return out


def scan_against(
    root: Path,
    reference: Mapping[str, FileState],
    exclude: Collection[str] = (),
    *,
    extra: dict[str, int] | None = None,
) -> dict[str, FileState]:
    """Like :func:`scan`, but a file hashes only when ``reference`` has a file of its size.

    For undoing changes: a new file or one whose size changed is known to differ without
    reading it (its state has no hash), so a huge or sparse file a step left behind is
    removed without being read.
    """
    out: dict[str, FileState] = {}
    for rel, fd, name, st in walk(root, exclude):
        if extra is not None and extra_bits(st):
            extra[rel] = extra_bits(st)
        old = reference.get(rel)
        if stat.S_ISREG(st.st_mode) and (
            old is None or old.kind != "file" or old.size != st.st_size
        ):
            out[rel] = FileState("file", st.st_mode, None, st.st_size)
            continue
        state = state_in(fd, name, st)
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
