"""The file a step writes its outputs to (``$VIGIL_OUTPUT``), outside the workspace.

Each attempt gets a fresh, empty file in a directory of its own: in overlay mode a host
directory beside the attempt's overlay, bound into the sandbox at :data:`INSIDE_DIR`;
in snapshot and off modes a directory under vigil's state directory, named as is. The
file is never in the workspace, so it is never part of a changeset.

The host reads it after the attempt as data, and the step may have replaced it with a
link, a FIFO or something huge: it is opened beneath its directory without following
links, must be a regular file, and is read up to a limit.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from vigil.errors import LimitExceeded
from vigil.layout import private_dir

INSIDE_DIR = "/run/vigil"
"""Where an overlay sandbox's step finds its outputs directory."""

FILE_NAME = "output"

MAX_OUTPUT_BYTES = 1024 * 1024
"""Outputs are for ids, versions, short messages; a file larger than this fails the attempt."""


@dataclass(frozen=True)
class OutputFile:
    """An attempt's outputs file: ``host`` as vigil opens it, ``inside`` as the step names it."""

    directory: Path
    inside: str

    @property
    def host(self) -> Path:
        """The file as vigil opens it."""
        return self.directory / FILE_NAME

    def create(self, owner: tuple[int, int] | None = None) -> None:
        """A fresh empty file (and its directory), writable by ``owner`` (uid, gid) when
        steps run as another user."""
        private_dir(self.directory)  # parents too: never the umask's mode
        fd = os.open(self.host, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            if owner is not None:
                os.fchown(fd, *owner)
        finally:
            os.close(fd)
        if owner is not None:
            os.chown(self.directory, *owner)

    def read(self, limit: int = MAX_OUTPUT_BYTES) -> bytes:
        """What the step wrote; b"" if it removed the file. ValueError if it is not a
        regular file; VIGIL-LIMIT if it holds more than ``limit`` bytes."""
        try:
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return b""
        try:
            try:
                fd = os.open(
                    FILE_NAME,
                    os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                    dir_fd=dir_fd,
                )
            except FileNotFoundError:
                return b""
            except OSError as exc:
                raise ValueError(f"$VIGIL_OUTPUT cannot be read: {exc.strerror}") from None
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    raise ValueError("$VIGIL_OUTPUT was replaced by something not a regular file")
                if info.st_size > limit:
                    raise _too_big(info.st_size, limit)
                chunks: list[bytes] = []
                size = 0
                while chunk := os.read(fd, 65536):
                    size += len(chunk)
                    if size > limit:
                        raise _too_big(size, limit)
                    chunks.append(chunk)
                return b"".join(chunks)
            finally:
                os.close(fd)
        finally:
            os.close(dir_fd)


def _too_big(size: int, limit: int) -> LimitExceeded:
    return LimitExceeded(
        f"the step wrote {size} bytes or more to $VIGIL_OUTPUT; outputs may hold {limit}",
        "Outputs are for short values (ids, versions, paths): write large data to a file "
        "in the workspace and output its path.",
    )


__all__ = ["INSIDE_DIR", "MAX_OUTPUT_BYTES", "OutputFile"]
