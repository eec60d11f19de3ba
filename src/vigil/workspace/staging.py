"""Where a root-run vigil puts what an unprivileged sandbox must reach.

When vigil runs as root, each step runs as an unprivileged host user (``run_as``), and so
does bubblewrap, which sets the sandbox up. That user can neither traverse root's private
directories (a workspace under ``/root`` or ``/tmp/pytest-of-root``) nor write a
root-owned workspace. So, per attempt, vigil stages:

- the workspace as an *idmapped* mount (``open_tree`` + ``mount_setattr(MOUNT_ATTR_IDMAP)``)
  in which the workspace owner's files appear owned by ``run_as``; overlayfs accepts it
  as a lower layer (Linux 5.19+), so the step can change any file in its private view;
- the attempt directory (overlay upper and work dirs, chowned to ``run_as``) and every
  other directory bubblewrap binds, as plain bind mounts;

all under a small tmpfs whose path every user can traverse. These mounts exist only in a
private mount namespace of the calling thread (``unshare(CLONE_NEWNS)`` affects one
thread): the host never sees them, nothing outlives vigil, and a crash leaks no mount.
The thread's processes (bubblewrap) inherit the namespace, so the attempt must prepare,
spawn and discard on one thread, as the engine does.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import itertools
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vigil.workspace.errors import SandboxUnavailable

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_MS_BIND, _MS_REC, _MS_SLAVE = 0x1000, 0x4000, 0x80000
_MNT_DETACH = 2
# Generic syscall numbers: the same on x86_64, aarch64 and the other 64-bit ports.
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
_OPEN_TREE_CLONE, _OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
_AT_FDCWD, _AT_EMPTY_PATH = -100, 0x1000
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_IDMAP = 0x00100000
_ID_MAX = 4294967295  # ids 0 .. 2**32 - 2 are valid; -1 is "no id"


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str) -> None:
    def enc(text: str | None) -> bytes | None:
        return text.encode() if text else None

    result = _libc().mount(
        enc(source), target.encode(), enc(fstype), ctypes.c_ulong(flags), enc(data)
    )
    _check(result, f"mount {target}")


def _umount(target: str) -> None:
    _libc().umount2(target.encode(), _MNT_DETACH)


def id_map(owner: int, run_as: int) -> str:
    """A uid/gid map that shows ``owner``'s files as ``run_as``'s and every other id as
    itself (``run_as``'s own files then belong to nobody the sandbox knows)."""
    lines = [f"{owner} {run_as} 1"]
    low, high = sorted((owner, run_as))
    for start, end in ((0, low), (low + 1, high), (high + 1, _ID_MAX)):
        if end > start:
            lines.append(f"{start} {start} {end - start}")
    return "\n".join(lines) + "\n"


@functools.cache
def _userns(uid_map: str, gid_map: str) -> int:
    """A user namespace with these maps, as an fd, made once per process and kept."""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child: become the namespace's only member, then wait
        code = 1
        try:
            os.close(ready_r)
            os.close(hold_w)
            code = 0 if _libc().unshare(_CLONE_NEWUSER) == 0 else 1
            os.write(ready_w, b"x")
            os.read(hold_r, 1)
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(hold_r)
    try:
        os.read(ready_r, 1)
        with open(f"/proc/{pid}/uid_map", "w") as fh:
            fh.write(uid_map)
        with open(f"/proc/{pid}/gid_map", "w") as fh:
            fh.write(gid_map)
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        if os.readlink(f"/proc/{pid}/ns/user") == os.readlink("/proc/self/ns/user"):
            os.close(fd)
            raise OSError("the helper could not create a user namespace")
        return fd
    finally:
        os.close(ready_r)
        os.close(hold_w)
        os.waitpid(pid, 0)


def idmapped_clone(path: str, uid_map: str, gid_map: str) -> int:
    """A detached mount of ``path`` (not its submounts) seen through the given id maps."""
    libc = _libc()
    fd = _check(
        libc.syscall(
            _SYS_OPEN_TREE, _AT_FDCWD, path.encode(), _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC
        ),
        f"open_tree {path}",
    )
    try:
        attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, _userns(uid_map, gid_map))
        _check(
            libc.syscall(
                _SYS_MOUNT_SETATTR,
                fd,
                b"",
                _AT_EMPTY_PATH,
                ctypes.byref(attr),
                ctypes.sizeof(attr),
            ),
            f"idmapping {path}",
        )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _attach(fd: int, target: str) -> None:
    _check(
        _libc().syscall(
            _SYS_MOVE_MOUNT, fd, b"", _AT_FDCWD, target.encode(), _MOVE_MOUNT_F_EMPTY_PATH
        ),
        f"attaching a mount at {target}",
    )


_THREAD = threading.local()
_COUNTER = itertools.count()


@functools.cache
def _base() -> str:
    """An empty root-owned directory, traversable by all, under which each thread mounts
    its private staging tmpfs. Created once per process; empty on the host."""
    path = tempfile.mkdtemp(prefix="vigil-stage-")
    os.chmod(path, 0o755)
    atexit.register(_remove_base, path)
    return path


def _remove_base(path: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _thread_area() -> str:
    """This thread's private mount namespace and its staging tmpfs (made on first use)."""
    area: str | None = getattr(_THREAD, "area", None)
    if area is not None:
        return area
    _check(_libc().unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # Nothing mounted here may propagate back to the host.
    _mount(None, "/", None, _MS_REC | _MS_SLAVE, "")
    base = _base()
    _mount("vigil-stage", base, "tmpfs", 0, "mode=0755,size=1m")
    _THREAD.area = base
    return base


@dataclass
class Stage:
    """One attempt's staged sources, alive until :meth:`close`."""

    dir: str
    thread: int
    lower: str
    attempt: str
    empty: str
    mounts: list[str]

    def source(self, path: str) -> str:
        """Stage ``path`` (a directory or file) with a bind mount; the path to use instead."""
        target = os.path.join(self.dir, f"s{len(self.mounts)}")
        if os.path.isdir(path):
            os.mkdir(target)
        else:
            Path(target).touch()
        _mount(path, target, None, _MS_BIND | _MS_REC, "")
        self.mounts.append(target)
        return target

    def close(self) -> None:
        """Detach every staged mount (idempotent; a no-op on another thread)."""
        if threading.get_ident() != self.thread:
            return
        for target in reversed(self.mounts):
            _umount(target)
            with contextlib.suppress(OSError):
                os.rmdir(target) if os.path.isdir(target) else os.unlink(target)
        self.mounts.clear()
        with contextlib.suppress(OSError):
            os.rmdir(self.empty)
        with contextlib.suppress(OSError):
            os.rmdir(self.dir)


def stage(
    workspace: Path, attempt_dir: Path, *, owner: tuple[int, int], run_as: tuple[int, int]
) -> Stage:
    """Stage ``workspace`` (idmapped from ``owner`` to ``run_as`` when they differ) and
    ``attempt_dir`` for a sandbox that runs as ``run_as``."""
    try:
        area = _thread_area()
        here = os.path.join(area, f"a{next(_COUNTER)}")
        os.mkdir(here, 0o755)
        st = Stage(
            here,
            threading.get_ident(),
            os.path.join(here, "lower"),
            os.path.join(here, "attempt"),
            os.path.join(here, "empty"),
            [],
        )
        os.mkdir(st.empty, 0o755)
        os.mkdir(st.lower)
        if owner != run_as:
            fd = idmapped_clone(
                str(workspace), id_map(owner[0], run_as[0]), id_map(owner[1], run_as[1])
            )
            try:
                _attach(fd, st.lower)
            finally:
                os.close(fd)
        else:
            _mount(str(workspace), st.lower, None, _MS_BIND, "")
        st.mounts.append(st.lower)
        os.mkdir(st.attempt)
        _mount(str(attempt_dir), st.attempt, None, _MS_BIND, "")
        st.mounts.append(st.attempt)
        return st
    except OSError as exc:
        raise SandboxUnavailable(
            f"cannot map the workspace for an unprivileged step: {exc}",
            "Run vigil as a normal user, set [workspace] run_as to the workspace owner, "
            "or use a filesystem that supports idmapped mounts (ext4, xfs, btrfs, tmpfs).",
        ) from exc


@contextlib.contextmanager
def staged(
    workspace: Path, attempt_dir: Path, *, owner: tuple[int, int], run_as: tuple[int, int]
) -> Iterator[Stage]:
    """:func:`stage` as a context manager."""
    st = stage(workspace, attempt_dir, owner=owner, run_as=run_as)
    try:
        yield st
    finally:
        st.close()
