"""Removing a tree a step made: any depth, any permissions, nothing followed.

A step decides what lies in its attempt's directory: thousands of levels of nesting,
directories without read or write permission, names of 255 bytes. ``shutil.rmtree``
recurses once per level (Python's recursion limit stops it near 1,000) and passes path
strings that outgrow ``PATH_MAX``; either way the attempt's data would stay on the disk.

Here a tree is removed with descriptors only. One directory is open at a time (one per
level would run out of descriptors long before the tree runs out of levels); the names
still to visit on each level of the current branch are kept in memory; the way back up
is ``..``, checked against the device and inode recorded on the way down, so a directory
moved away meanwhile is noticed and never followed out of the tree. Entries are unlinked
(a symbolic link goes, never its target) and directories are entered with
``O_NOFOLLOW``. A directory without the permissions removal needs is given them first,
when vigil owns it (without root, that is every directory a step makes).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# A directory that keeps getting new entries while it is removed is given up on.
_REFILLS = 3


class TreeMoved(OSError):
    """A directory being removed was moved or replaced meanwhile."""


@dataclass
class _Level:
    name: str
    dev: int
    ino: int
    subdirs: list[str] = field(default_factory=list)
    refills: int = 0


def remove_tree(path: Path) -> None:
    """Delete ``path`` and, if it is a directory, everything under it; nothing if absent."""
    try:
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        remove_at(parent, path.name)
    finally:
        os.close(parent)


def remove_at(dir_fd: int, name: str) -> None:
    """Delete ``name`` in the directory ``dir_fd`` and, if it is a directory, all below it."""
    if _unlink(dir_fd, name):
        _remove_dir(dir_fd, name)


def _unlink(dir_fd: int, name: str) -> bool:
    """Unlink a non-directory (or nothing); True if ``name`` is a directory."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    except IsADirectoryError:
        return True
    except PermissionError:
        _make_usable(os.fstat(dir_fd), dir_fd)
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            return True
    return False


def _make_usable(st: os.stat_result, fd: int) -> None:
    """Give the owner read, write and search on a directory vigil owns (removal needs
    them); a directory of another owner is left alone (its removal then fails)."""
    if st.st_uid == os.geteuid() and st.st_mode & stat.S_IRWXU != stat.S_IRWXU:
        os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(st.st_mode) | stat.S_IRWXU)


def _enter(dir_fd: int, name: str) -> int | None:
    """A descriptor of directory ``name``; None if it is gone or no longer a directory
    (then it is unlinked: a link put in its place goes, its target stays)."""
    for _ in range(2):
        try:
            return os.open(name, _DIR, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                if _unlink(dir_fd, name):
                    continue
                return None
            if exc.errno != errno.EACCES:
                raise
        path_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            _make_usable(os.fstat(path_fd), path_fd)
        finally:
            os.close(path_fd)
    return os.open(name, _DIR, dir_fd=dir_fd)


def _clear(fd: int, name: str) -> _Level:
    """Unlink every non-directory in ``fd``; the level with its subdirectories to visit."""
    st = os.fstat(fd)
    _make_usable(st, fd)
    subdirs = [entry for entry in os.listdir(fd) if _unlink(fd, entry)]
    return _Level(name, st.st_dev, st.st_ino, subdirs)


def _remove_dir(top_fd: int, top: str) -> None:
    fd = _enter(top_fd, top)
    if fd is None:
        return
    try:
        levels = [_clear(fd, top)]
        while levels:
            level = levels[-1]
            if level.subdirs:
                name = level.subdirs.pop()
                child = _enter(fd, name)
                if child is not None:
                    os.close(fd)
                    fd = child
                    levels.append(_clear(fd, name))
                continue
            levels.pop()
            if levels:
                parent = levels[-1]
                up = os.open("..", _DIR, dir_fd=fd)
                ust = os.fstat(up)
                if (ust.st_dev, ust.st_ino) != (parent.dev, parent.ino):
                    os.close(up)
                    raise TreeMoved(errno.ENOENT, f"{parent.name} moved while it was removed")
                os.close(fd)
                fd = up
                _rmdir(fd, level, parent)
        os.close(fd)
        fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(top, dir_fd=top_fd)
    finally:
        if fd >= 0:
            os.close(fd)


def _rmdir(fd: int, level: _Level, parent: _Level) -> None:
    """Remove the emptied directory ``level`` from ``parent`` (open as ``fd``); one that
    got new entries meanwhile is visited again, a few times at most."""
    try:
        os.rmdir(level.name, dir_fd=fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOTEMPTY or parent.refills >= _REFILLS:
            raise
        parent.refills += 1
        parent.subdirs.append(level.name)
