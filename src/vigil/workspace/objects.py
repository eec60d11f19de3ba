"""Content-addressed copies of file contents under ``.vigil/objects/``.

Changesets keep both pre-images and post-images here, so commit and rollback never need
the attempt's upper directory or a copy of the old workspace.

A hash comes from a changeset, and a changeset may come from a journal someone else can
write, so a hash is checked to be 64 hex digits before it names a file. Blobs are opened
beneath the store without following links, and their bytes are checked against their
name whenever they are copied out: a damaged or swapped blob is refused (VIGIL-STORE),
never written into the workspace.

The store is private to vigil's user (directories 0700, blobs 0600): it keeps the
pre-image of every file a step changed, a 0600 secret among them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from vigil.errors import StoreError
from vigil.layout import PRIVATE_DIR, PRIVATE_FILE, private_dir
from vigil.workspace.beneath import Tree, UnsafePath, open_regular

_CHUNK = 1 << 20
_SHA = re.compile(r"[0-9a-f]{64}")


def _check(sha256: str) -> str:
    if not _SHA.fullmatch(sha256):
        raise UnsafePath(f"{sha256!r} is not a sha256 object name")
    return sha256


def _copy(src: int, dst: int | None) -> str:
    """Copy ``src`` to ``dst`` (from the start of ``src``) and return the bytes' sha256."""
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(src, _CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
        if dst is not None:
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst, view) :]
    return digest.hexdigest()


class ObjectStore:
    """Blobs named by the sha256 of their bytes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._held: Tree | None = None

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Within the block, reads share one descriptor of the store and of each of its
        directories (a commit of thousands of files opens the store once). Nothing may be
        stored within it: a directory it found missing stays missing for it."""
        if self._held is not None:
            yield
            return
        private_dir(self.root.parent)
        with Tree(self.root.parent) as tree, tree.cached_dirs():
            self._held = tree
            try:
                yield
            finally:
                self._held = None

    def path_of(self, sha256: str) -> Path:
        """Where the blob with this hash lives (it may not exist)."""
        _check(sha256)
        return self.root / sha256[:2] / sha256[2:]

    def _rel(self, sha256: str) -> str:
        _check(sha256)
        return f"{self.root.name}/{sha256[:2]}/{sha256[2:]}"

    def _tree(self) -> Tree:
        private_dir(self.root.parent)
        return Tree(self.root.parent)

    def has(self, sha256: str) -> bool:
        """Whether the blob is stored (as a regular file, not a link)."""
        try:
            if self._held is not None:
                st = self._held.lstat(self._rel(sha256))
            else:
                with self._tree() as tree:
                    st = tree.lstat(self._rel(sha256))
        except OSError:
            return False
        return st is not None and stat.S_ISREG(st.st_mode)

    def _open(self, sha256: str) -> int:
        if self._held is not None:
            return self._held.open_file(self._rel(sha256))
        with self._tree() as tree:
            return tree.open_file(self._rel(sha256))

    def _store(self, src: int) -> str:
        """Copy ``src`` into the store under the hash of its bytes; returns that hash."""
        with self._tree() as tree:
            tree.mkdir(self.root.name, PRIVATE_DIR)
            fd = tree.open_dir([self.root.name])
            try:
                tmp = f"incoming-{os.getpid()}-{secrets.token_hex(8)}"
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                out = os.open(tmp, flags, PRIVATE_FILE, dir_fd=fd)
                try:
                    actual = _copy(src, out)
                finally:
                    os.close(out)
                try:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(actual[:2], PRIVATE_DIR, dir_fd=fd)
                    sub = os.open(actual[:2], os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                    try:
                        os.rename(tmp, actual[2:], src_dir_fd=fd, dst_dir_fd=sub)
                    finally:
                        os.close(sub)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=fd)
                    raise
            finally:
                os.close(fd)
        return actual

    def put_fd(self, src: int, sha256: str | None = None) -> str:
        """Store the bytes readable from ``src`` and return their hash (known hashes skip)."""
        if sha256 is not None and self.has(sha256):
            return sha256
        return self._store(src)

    def put_file(self, source: Path, sha256: str | None = None) -> str:
        """Store a copy of the regular file ``source`` (a link is refused, not followed)."""
        if sha256 is not None and self.has(sha256):
            return sha256
        fd = open_regular(None, str(source))
        try:
            return self._store(fd)
        finally:
            os.close(fd)

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` and return its hash."""
        sha = hashlib.sha256(data).hexdigest()
        if self.has(sha):
            return sha
        fd = os.memfd_create("vigil-blob", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            return self._store(fd)
        finally:
            os.close(fd)

    def read(self, sha256: str) -> bytes:
        """The blob's bytes; VIGIL-STORE if they do not match their hash."""
        fd = self._open(sha256)
        try:
            chunks = []
            offset = 0
            while chunk := os.pread(fd, _CHUNK, offset):
                chunks.append(chunk)
                offset += len(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if hashlib.sha256(data).hexdigest() != sha256:
            raise _damaged(sha256)
        return data

    def copy_into(self, sha256: str, dst: int) -> None:
        """Write the blob's bytes to the descriptor ``dst``; VIGIL-STORE if damaged."""
        fd = self._open(sha256)
        try:
            actual = _copy(fd, dst)
        finally:
            os.close(fd)
        if actual != sha256:
            raise _damaged(sha256)

    def copy_to(self, sha256: str, dest: Path) -> None:
        """Write the blob's bytes to a new file ``dest`` (which must not exist)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        out = os.open(dest, flags, 0o600)
        try:
            self.copy_into(sha256, out)
        finally:
            os.close(out)


def _damaged(sha256: str) -> StoreError:
    return StoreError(
        f"object {sha256[:12]} in .vigil/objects does not match its hash",
        "Something changed vigil's object store; restore .vigil/objects from a backup "
        "or discard the changes that refer to this object.",
    )


_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def sync_filesystem(path: Path) -> None:
    """Flush every dirty page of the filesystem holding ``path`` (one call, not one per file)."""
    # A changeset of directories only stores no object: the store may not exist yet.
    private_dir(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        syncfs = getattr(_libc, "syncfs", None)
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
