"""Paths beneath a root directory, resolved without following symbolic links.

Everything vigil reads or writes in a tree on a step's behalf goes through :class:`Tree`:
commit, review approval, rollback, snapshot restore, recovery of a half-applied commit,
dry-run layers, and the reads behind conflict, drift and capture checks. A string
comparison of paths is never the security check; the kernel's resolution is.

Design
------
A path is a tree-relative POSIX string. It is split into components, each of which must
be a plain name: not empty, not ``.`` or ``..``, no NUL (:class:`UnsafePath` otherwise).
The parent directory is then opened as a descriptor:

- with ``openat2(2)`` and ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
  RESOLVE_NO_MAGICLINKS`` where the kernel has it (Linux 5.6 and later), one system call
  for the whole parent path;
- else component by component, each opened with ``O_PATH | O_DIRECTORY | O_NOFOLLOW``
  relative to the previous component's descriptor.

Either way, a component that is a symbolic link, a file or anything else that is not a
directory raises :class:`Blocked` naming that component: it is never followed. The
operation itself then acts on the last component relative to the parent's descriptor
(``dir_fd=``, ``O_NOFOLLOW``, ``follow_symlinks=False``), so renaming a directory or
swapping it for a link after it was resolved cannot redirect the operation: it lands in
the directory that was resolved, which was beneath the root when it was resolved.

Files are never written through an existing inode. New content goes to a temporary name
created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (which refuses to reuse anything already
there, a link included), its mode is set on the descriptor, and it is renamed over the
target. Modes are cut to :data:`KEPT_MODE` on every write, whatever the caller asks: a
changeset read from the store is as hostile as the step that made it. A hard link
from the tree to a file elsewhere is replaced, never modified. Reads open with
``O_NOFOLLOW | O_NONBLOCK`` and check with ``fstat`` that they got the regular file that
``lstat`` saw, so a swap to a link, a FIFO or a device between the two is refused rather
than followed or waited on.

Not covered: a process that can write the tree and moves an already resolved directory
to a place outside it takes vigil's next write in that directory along. Only processes
outside the sandbox can do that (a step in overlay mode never writes the real tree).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
_SYS_OPENAT2 = 437  # the same number on every architecture (new-style syscall table)
DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
TMP_SUFFIX = ".vigil-tmp"
# The only permission bits vigil writes on a step's behalf. Never setuid, setgid or
# sticky: a root-run vigil writes files as root, so a step's `chmod 4755` would become a
# setuid-root program any local user can run. Never writable by others: any local user
# could then change the project (or what a later run executes). Everything else of the
# mode (read, write and execute for owner and group, read and execute for others) is kept.
KEPT_MODE = 0o775
_NAME_MAX = 255
# The longest relative path vigil handles: what one system call takes (PATH_MAX, 4096,
# less the terminating NUL). Longer paths are a VIGIL-LIMIT at capture and unsafe in a
# changeset. It also bounds depth: at most 2,048 levels of one-letter names.
MAX_PATH = 4095
_CHUNK = 1 << 20


class UnsafePath(ValueError):
    """A path that is not a plain relative path (empty, absolute, ``.``, ``..``, NUL)."""


class Blocked(OSError):
    """A component of a path is not a directory (a symbolic link, a file, a device)."""

    def __init__(self, rel: str, what: str) -> None:
        super().__init__(errno.ENOTDIR, f"{shown(rel)} is a {what}, not a directory")
        self.rel = rel
        self.what = what


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_have_openat2: bool | None = None


def _openat2(dirfd: int, path: str, flags: int) -> int | None:
    """``openat2`` beneath ``dirfd`` without links; None when the kernel lacks it."""
    global _have_openat2
    if _have_openat2 is False:
        return None
    how = _OpenHow(flags, 0, _RESOLVE)
    fd = _syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd >= 0:
        _have_openat2 = True
        return int(fd)
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EPERM) and _have_openat2 is None:
        # ENOSYS: an old kernel; EPERM: a seccomp filter that refuses unknown calls.
        _have_openat2 = False
        return None
    raise OSError(err, os.strerror(err), path)


def openat2_available() -> bool:
    """Whether this kernel resolves with ``openat2`` (else the component walk is used)."""
    with contextlib.suppress(OSError):
        fd = _openat2(os.open("/", DIR_FLAGS), ".", DIR_FLAGS)
        if fd is not None:
            os.close(fd)
    return bool(_have_openat2)


def components(rel: str) -> list[str]:
    """The plain names ``rel`` is made of; :class:`UnsafePath` if it is not plain."""
    if not rel or rel.startswith("/") or "\0" in rel:
        raise UnsafePath(f"{shown(rel)!r} is not a relative path")
    if len(os.fsencode(rel)) > MAX_PATH:
        raise UnsafePath(f"{shown(rel)!r} is longer than {MAX_PATH} bytes")
    parts = rel.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePath(f"{shown(rel)!r} has an empty, '.' or '..' component")
    return parts


def shown(path: str, keep: int = 48) -> str:
    """``path`` for a message: a long one keeps its start and end and says its length
    (a step can make paths of many kilobytes)."""
    size = len(os.fsencode(path))
    if size <= 2 * keep + 40:
        return path
    return f"{path[:keep]}...[{size} bytes]...{path[-keep:]}"


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    return "special file"


_CACHED_DIRS = 128
"""The most directory descriptors :meth:`Tree.cached_dirs` keeps open at once."""


def tmp_name(name: str) -> str:
    """The temporary name a new version of ``name`` is written under before the rename."""
    if len(os.fsencode(name)) + len(TMP_SUFFIX) <= _NAME_MAX:
        return name + TMP_SUFFIX
    return ".vigil-" + hashlib.sha256(os.fsencode(name)).hexdigest()[:32] + TMP_SUFFIX


class Tree:
    """A directory opened once; every path is resolved beneath it without following links."""

    def __init__(self, root: Path) -> None:
        # The root itself is the caller's (resolved) choice; only what lies below is not.
        self.root = root
        self.fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self._dirs: dict[tuple[str, ...], int] | None = None
        self._missing: set[tuple[str, ...]] = set()

    @contextlib.contextmanager
    def cached_dirs(self) -> Iterator[None]:
        """Within the block, each parent directory is resolved once and its descriptor
        reused: a pass over thousands of paths makes one ``openat2`` per directory, not
        several per path.

        A descriptor names the directory itself, so nothing reached through it follows a
        link; a directory moved or swapped for a link after it was resolved is written
        where it went, never through the link. A directory found missing stays missing
        until :meth:`mkdir` makes it. Only for passes that remove no directory, or
        remove the deepest first.
        """
        if self._dirs is not None:
            yield
            return
        self._dirs = {}
        try:
            yield
        finally:
            dirs, self._dirs = self._dirs, None
            self._missing.clear()
            for fd in dirs.values():
                os.close(fd)

    def close(self) -> None:
        """Release the root's descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- resolution

    def _walk(self, parts: Sequence[str]) -> int:
        """Component by component; names the first component that is not a directory."""
        fd = os.dup(self.fd)
        try:
            for i, part in enumerate(parts):
                try:
                    nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
                except NotADirectoryError:
                    prefix = "/".join(parts[: i + 1])
                    st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                    raise Blocked(prefix, _kind(st.st_mode)) from None
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    def open_dir(self, parts: Sequence[str]) -> int:
        """An ``O_PATH`` descriptor of the directory ``parts`` (the root when empty).

        FileNotFoundError if a component is missing; :class:`Blocked` if one is not a
        directory.
        """
        if not parts:
            return os.dup(self.fd)
        try:
            fd = _openat2(self.fd, "/".join(parts), DIR_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV):
                return self._walk(parts)  # names the component at fault (or succeeds)
            raise
        return self._walk(parts) if fd is None else fd

    @contextlib.contextmanager
    def parent(self, rel: str) -> Iterator[tuple[int, str]]:
        """The descriptor of ``rel``'s directory and ``rel``'s last name."""
        parts = components(rel)
        if self._dirs is not None:
            key = tuple(parts[:-1])
            if key in self._missing:  # a new tree's paths: its directory is not made yet
                raise FileNotFoundError(errno.ENOENT, "no such directory", "/".join(key))
            fd = self._dirs.pop(key, None)  # put back last: least recently used goes first
            if fd is None:
                if len(self._dirs) >= _CACHED_DIRS:
                    os.close(self._dirs.pop(next(iter(self._dirs))))
                try:
                    fd = self.open_dir(parts[:-1])
                except FileNotFoundError:
                    self._missing.add(key)
                    raise
            self._dirs[key] = fd
            yield fd, parts[-1]
            return
        fd = self.open_dir(parts[:-1])
        try:
            yield fd, parts[-1]
        finally:
            os.close(fd)

    # --------------------------------------------------------------------- reads

    def lstat(self, rel: str) -> os.stat_result | None:
        """What is at ``rel`` (not followed), or None if nothing is (or a parent is missing).

        :class:`Blocked` if a parent component is a link or a file.
        """
        try:
            with self.parent(rel) as (fd, name):
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def readlink(self, rel: str) -> str:
        """The target text of the symbolic link at ``rel``."""
        with self.parent(rel) as (fd, name):
            return os.readlink(name, dir_fd=fd)

    def open_file(self, rel: str, expect: os.stat_result | None = None) -> int:
        """A read-only descriptor of the regular file at ``rel`` (``expect``: its lstat)."""
        with self.parent(rel) as (fd, name):
            return open_regular(fd, name, expect)

    def listdir(self, rel: str = "") -> list[str]:
        """Names in directory ``rel`` (the root when empty)."""
        parts = components(rel) if rel else []
        fd = self.open_dir(parts)
        try:
            return listdir_fd(fd)
        finally:
            os.close(fd)

    # -------------------------------------------------------------------- writes

    def mkdir(self, rel: str, mode: int = 0o755) -> None:
        """Create directory ``rel``; an existing directory is left alone."""
        with self.parent(rel) as (fd, name):
            self._missing.discard(tuple(components(rel)))
            try:
                os.mkdir(name, mode & KEPT_MODE, dir_fd=fd)
            except FileExistsError:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    raise

    def unlink(self, rel: str) -> None:
        """Remove the non-directory at ``rel`` (a link is removed, not its target)."""
        with self.parent(rel) as (fd, name):
            os.unlink(name, dir_fd=fd)

    def rmdir(self, rel: str) -> None:
        """Remove the empty directory at ``rel``."""
        with self.parent(rel) as (fd, name):
            os.rmdir(name, dir_fd=fd)

    def chmod(self, rel: str, mode: int) -> None:
        """Set the mode of the directory or file at ``rel`` without following a link
        (cut to :data:`KEPT_MODE`; see :func:`chmod_at`)."""
        with self.parent(rel) as (fd, name):
            chmod_at(fd, name, mode)

    def clear_bits(self, rel: str, bits: int) -> None:
        """Take ``bits`` out of the mode at ``rel`` (it never adds one); a link is refused."""
        with self.parent(rel) as (fd, name):
            pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            try:
                now = os.fstat(pfd).st_mode
                if stat.S_ISLNK(now):
                    raise Blocked(rel, "symbolic link")
                if stat.S_IMODE(now) & bits:
                    os.chmod(f"/proc/self/fd/{pfd}", stat.S_IMODE(now) & ~bits)
            finally:
                os.close(pfd)

    def symlink(self, rel: str, target: str) -> None:
        """Make ``rel`` a symbolic link to ``target``, replacing what is there."""
        with self.parent(rel) as (fd, name):
            tmp = tmp_name(name)
            _discard(fd, tmp)
            os.symlink(target, tmp, dir_fd=fd)
            os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)

    def write_file(
        self, rel: str, fill: Callable[[int], None], mode: int, mtime_ns: int | None = None
    ) -> None:
        """Make ``rel`` a new file: ``fill`` writes the content to a fresh descriptor,
        which is then given ``mode`` (cut to :data:`KEPT_MODE`) and ``mtime_ns`` if any,
        and renamed over whatever ``rel`` held."""
        with self.parent(rel) as (fd, name):
            tmp = tmp_name(name)
            _discard(fd, tmp)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            out = os.open(tmp, flags, 0o600, dir_fd=fd)
            try:
                fill(out)
                os.fchmod(out, mode & KEPT_MODE)
                if mtime_ns is not None:
                    os.utime(out, ns=(mtime_ns, mtime_ns))
            except BaseException:
                os.close(out)
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=fd)
                raise
            os.close(out)
            os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)

    def discard_tmp(self, rel: str) -> None:
        """Remove a temporary left by an interrupted write of ``rel``, if any."""
        with contextlib.suppress(FileNotFoundError), self.parent(rel) as (fd, name):
            _discard(fd, tmp_name(name))


def _discard(dir_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)


def open_regular(dir_fd: int | None, name: str, expect: os.stat_result | None = None) -> int:
    """Open ``name`` in ``dir_fd`` for reading only if it is the regular file expected."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Blocked(name, "symbolic link") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise Blocked(name, _kind(st.st_mode))
    if expect is not None and (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
        os.close(fd)
        raise Blocked(name, "file replaced while it was read")
    return fd


def listdir_fd(fd: int) -> list[str]:
    """Names in the directory ``fd`` refers to (an ``O_PATH`` descriptor is reopened)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    real = os.open(".", flags, dir_fd=fd)
    try:
        return os.listdir(real)
    finally:
        os.close(real)


def chmod_at(dir_fd: int, name: str, mode: int) -> None:
    """``chmod`` of ``name`` in ``dir_fd`` on a descriptor; a symbolic link is refused.

    The mode is cut to :data:`KEPT_MODE`. A directory keeps a setgid bit it already has
    (the kernel gives one to a directory made inside a setgid directory, so group
    projects keep their group): vigil never adds it, only leaves it where it was.
    """
    flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, dir_fd=dir_fd)
    try:
        now = os.fstat(fd).st_mode
        if stat.S_ISLNK(now):
            raise Blocked(name, "symbolic link")
        mode &= KEPT_MODE
        if stat.S_ISDIR(now):
            mode |= now & stat.S_ISGID
        # fchmod refuses O_PATH descriptors; the descriptor's /proc entry names this
        # very inode (it is not resolved again by name).
        os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)


def sha256_fd(fd: int) -> str:
    """Hex sha256 of what can be read from ``fd`` (read from its start)."""
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()
