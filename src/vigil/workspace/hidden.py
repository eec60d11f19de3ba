"""What is never a plan's or a step's to read: vigil's state, the user's configuration.

:func:`hidden_paths` is the one list of hidden paths. The sandbox masks them (see
:mod:`vigil.workspace.rootfs`), and every file vigil reads on a plan's behalf outside the
sandbox (an agent's ``context:`` and ``prompt_file:``, a secret's ``file:`` source) is
refused when it is one of them or lies inside one.

The check compares identities (device and inode), never spellings: a path is refused when
any directory it really passes through, or the file itself, is a hidden path, so a case
variant on a case-insensitive filesystem, a bind mount, a ``..`` or a symbolic link that
leads there is recognised for what it is. Files that hold authority or records (keys,
grants, trusted keys, the halt ledger, the store, the audit log, ``vigil.toml``) are known
by their own identity too, so a hard link to one, wherever it lies, is refused as well.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vigil.config import PROJECT_FILE, STATE_DIR_NAME, user_config_dir
from vigil.workspace.beneath import DIR_FLAGS, Blocked, Tree, UnsafePath, components, open_regular
from vigil.workspace.errors import PathRefused

Identity = tuple[int, int]

MAX_WALK = 100_000
"""Entries looked at per tree whose files are known by identity; far beyond a config dir."""


def hidden_paths(state_dir: Path, extra: Sequence[Path] = ()) -> list[Path]:
    """The hidden paths of a workspace: its state directory, the user's configuration
    directory (keys, grants, trusted keys, halt ledger) and ``extra``, all resolved."""
    return [
        state_dir.resolve(),
        user_config_dir().expanduser().resolve(),
        *(p.resolve() for p in extra),
    ]


def _identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino)


def _files_under(top: Path, found: dict[Identity, str]) -> None:
    """The identity of every regular file under ``top``, links not followed."""
    pending, seen = [top], 0
    while pending and seen < MAX_WALK:
        current = pending.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                pending.append(Path(entry.path))
            elif stat.S_ISREG(st.st_mode):
                found.setdefault(_identity(st), entry.path)


@dataclass(frozen=True)
class Hidden:
    """Hidden paths and guarded files, by identity, as they were when looked at."""

    trees: dict[Identity, str] = field(default_factory=dict)
    """Hidden paths: refused themselves and with everything under them."""
    files: dict[Identity, str] = field(default_factory=dict)
    """Files refused under any name (protected files, and every file of ``walk`` trees)."""

    @classmethod
    def of(
        cls,
        paths: Iterable[Path],
        *,
        files: Iterable[Path] = (),
        walk: Iterable[Path] = (),
    ) -> Hidden:
        """``paths`` hidden with what lies under them; ``files`` and every file under the
        ``walk`` directories refused under any name, a hard link included."""
        trees: dict[Identity, str] = {}
        for path in paths:
            try:
                trees.setdefault(_identity(os.stat(path)), str(path))
            except OSError:
                continue  # nothing there yet: nothing to read through it either
        guarded: dict[Identity, str] = {}
        for path in files:
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                guarded.setdefault(_identity(st), str(path))
        for top in walk:
            _files_under(top, guarded)
        return cls(trees, guarded)

    @classmethod
    def for_workspace(
        cls,
        root: Path,
        extra: Sequence[Path] = (),
        *,
        files: Iterable[Path] = (),
        walk: Iterable[Path] = (),
    ) -> Hidden:
        """What a read on a plan's behalf in the workspace at ``root`` must not reach: the
        hidden paths (its ``.vigil``, the user configuration directory, ``extra``), and
        under any name ``vigil.toml``, ``files`` and every file of the user configuration
        directory (keys, grants, trusted keys, halt ledger) and of ``walk``."""
        return cls.of(
            hidden_paths(root / STATE_DIR_NAME, extra),
            files=[root / PROJECT_FILE, *files],
            walk=[user_config_dir().expanduser(), *walk],
        )

    def reason(self, st: os.stat_result) -> str | None:
        """Why the directory or file whose stat is ``st`` may not be read, or None."""
        key = _identity(st)
        if key in self.trees:
            return f"is hidden ({self.trees[key]})"
        if key in self.files:
            return f"is the same file as {self.files[key]}, which vigil keeps from plans"
        return None

    def real_path_reason(self, real: str) -> str | None:
        """Why the file at ``real`` (a path without links) lies in a hidden path, or None."""
        current = Path(real)
        for ancestor in (current, *current.parents):
            try:
                st = os.stat(ancestor)
            except OSError:
                return f"lies where vigil cannot tell what it is ({ancestor} is gone)"
            if _identity(st) in self.trees:
                return f"lies in a hidden path ({self.trees[_identity(st)]})"
        return None


def read_beneath(root: Path, rel: str, hidden: Hidden, *, limit: int, what: str) -> bytes:
    """The bytes of the regular file ``rel`` beneath ``root``, read without following a
    link in any component; :class:`PathRefused` if it leaves the workspace, passes through
    a link or a special file, is or lies in a hidden path, or is a guarded file.

    ``what`` names the read in messages (``context file``, ``secret file``). A missing
    file raises FileNotFoundError, a file larger than ``limit`` bytes ValueError.
    """
    if rel.startswith("/"):
        raise PathRefused(f"{what} {rel!r} is outside the workspace (an absolute path)")
    plain = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in plain:
        raise PathRefused(f"{what} {rel!r} leads outside the workspace ('..')")
    try:
        parts = components("/".join(plain))
    except UnsafePath:
        raise PathRefused(f"{what} {rel!r} is not a path to a file of the workspace") from None
    with Tree(root) as tree:
        fd = os.dup(tree.fd)
        try:
            for i, part in enumerate(parts[:-1]):
                try:
                    nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    raise PathRefused(
                        f"{what} {rel!r}: {'/'.join(parts[: i + 1])} is not a directory "
                        "(a symbolic link or a file); vigil follows no link in the workspace"
                    ) from None
                os.close(fd)
                fd = nxt
                why = hidden.reason(os.fstat(fd))
                if why is not None:
                    raise PathRefused(f"{what} {rel!r}: {'/'.join(parts[: i + 1])} {why}")
            try:
                file = open_regular(fd, parts[-1])
            except Blocked as exc:
                why = "; vigil follows no link in the workspace" if "link" in exc.what else ""
                raise PathRefused(
                    f"{what} {rel!r} is a {exc.what}, not a regular file{why}"
                ) from None
        finally:
            os.close(fd)
    with open(file, "rb") as fh:
        st = os.fstat(fh.fileno())
        why = hidden.reason(st)
        if why is not None:
            raise PathRefused(f"{what} {rel!r} {why}")
        if st.st_size > limit:
            raise ValueError(f"{what} {rel!r} is larger than {limit} bytes")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{what} {rel!r} is larger than {limit} bytes")
    return data


def read_host_file(path: Path, hidden: Hidden, *, limit: int, what: str) -> bytes:
    """The bytes of the regular file at the absolute ``path`` (links followed: a person
    named it), refused like :func:`read_beneath` when what was opened is, or really lies
    in, a hidden path or is a guarded file. No FIFO or device is ever waited on."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    fd = os.open(path, flags)
    with open(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PathRefused(f"{what} {str(path)!r} is not a regular file")
        why = hidden.reason(st) or hidden.real_path_reason(os.readlink(f"/proc/self/fd/{fd}"))
        if why is not None:
            raise PathRefused(f"{what} {str(path)!r} {why}")
        if st.st_size > limit:
            raise ValueError(f"{what} {str(path)!r} is larger than {limit} bytes")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{what} {str(path)!r} is larger than {limit} bytes")
    return data
