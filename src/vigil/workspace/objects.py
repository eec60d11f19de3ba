"""Content-addressed copies of file contents under ``.vigil/objects/``.

Changesets keep both pre-images and post-images here, so commit and rollback never need
the attempt's upper directory or a copy of the old workspace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import shutil
from pathlib import Path

_CHUNK = 1 << 20


class ObjectStore:
    """Blobs named by the sha256 of their bytes."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, sha256: str) -> Path:
        """Where the blob with this hash lives (it may not exist)."""
        return self.root / sha256[:2] / sha256[2:]

    def has(self, sha256: str) -> bool:
        """Whether the blob is stored."""
        return self.path_of(sha256).exists()

    def put_file(self, source: Path, sha256: str | None = None) -> str:
        """Store a copy of ``source`` and return its hash (known hashes skip the copy)."""
        if sha256 is not None and self.has(sha256):
            return sha256
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"incoming-{os.getpid()}-{id(source)}"
        digest = hashlib.sha256()
        with source.open("rb") as src, tmp.open("wb") as dst:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
        actual = digest.hexdigest()
        final = self.path_of(actual)
        final.parent.mkdir(exist_ok=True)
        os.replace(tmp, final)
        return actual

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` and return its hash."""
        sha = hashlib.sha256(data).hexdigest()
        final = self.path_of(sha)
        if not final.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, final)
        return sha

    def read(self, sha256: str) -> bytes:
        """The blob's bytes."""
        return self.path_of(sha256).read_bytes()

    def copy_to(self, sha256: str, dest: Path) -> None:
        """Write the blob's bytes to ``dest`` (created or truncated)."""
        with self.path_of(sha256).open("rb") as src, dest.open("wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)


_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def sync_filesystem(path: Path) -> None:
    """Flush every dirty page of the filesystem holding ``path`` (one call, not one per file)."""
    # A changeset of directories only stores no object: the store may not exist yet.
    path.mkdir(parents=True, exist_ok=True)
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
