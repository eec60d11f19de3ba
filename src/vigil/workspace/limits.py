"""How much one attempt may change: limits on its changeset, checked before anything is copied.

A step that writes a huge or sparse file, or millions of files, fails that attempt with
``VIGIL-LIMIT`` instead of filling the disk with copies in ``.vigil/objects/``. Sizes are
apparent sizes (``st_size``): a sparse file counts at its full length, because commit and
review would write and show it at that length. A changed path may be at most
:data:`~vigil.workspace.beneath.MAX_PATH` bytes long. While the step runs, the same
limits and a reserve of free disk space are watched by :mod:`vigil.workspace.watchdog`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pydantic import BaseModel, ByteSize, ConfigDict, Field

from vigil.errors import LimitExceeded
from vigil.workspace.beneath import MAX_PATH, shown

DEFAULT_MAX_BYTES = 2 * 1024**3
DEFAULT_MAX_FILES = 100_000
DEFAULT_MIN_FREE = 1024**3


class WorkspaceConfig(BaseModel):
    """The ``[workspace]`` section of ``vigil.toml``."""

    # Other keys of the section belong to the sandbox; each reader checks its own.
    model_config = ConfigDict(extra="ignore", frozen=True)

    isolation: str = "auto"
    max_changeset_bytes: ByteSize = Field(ByteSize(DEFAULT_MAX_BYTES), ge=0)
    max_changeset_files: int = Field(DEFAULT_MAX_FILES, ge=0)
    # Free space an attempt must leave on the disk it writes to; 0: not watched.
    min_free_disk: ByteSize = Field(ByteSize(DEFAULT_MIN_FREE), ge=0)


@dataclass(frozen=True)
class Limits:
    """Per-attempt limits: content bytes to store and paths changed, and the free disk
    space a running attempt must leave (0: not watched)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_files: int = DEFAULT_MAX_FILES
    min_free: int = DEFAULT_MIN_FREE

    @classmethod
    def from_config(cls, section: WorkspaceConfig) -> Limits:
        """The limits ``[workspace]`` sets."""
        return cls(
            int(section.max_changeset_bytes),
            section.max_changeset_files,
            int(section.min_free_disk),
        )

    def tally(self) -> Tally:
        """A fresh count against these limits."""
        return Tally(self)


class Tally:
    """A running count of one attempt's changeset; raises VIGIL-LIMIT on the first excess."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.files = 0
        self.bytes = 0

    def path(self, rel: str) -> None:
        """Count one changed path (and refuse one too long for vigil to handle)."""
        self.files += 1
        if self.files > self.limits.max_files:
            raise LimitExceeded(
                f"the attempt changed more than {self.limits.max_files} paths (at {shown(rel)})",
                "Make the step change fewer files (clean up generated output), or raise "
                "[workspace] max_changeset_files in vigil.toml.",
            )
        if len(os.fsencode(rel)) > MAX_PATH:
            raise LimitExceeded(
                f"the attempt made a path longer than {MAX_PATH} bytes: {shown(rel)}",
                "Make the step build a shallower tree or shorter names; vigil does not "
                "capture, commit or roll back paths longer than the kernel's PATH_MAX.",
            )

    def content(self, rel: str, size: int) -> None:
        """Count ``size`` bytes of content that would be stored for ``rel``."""
        self.bytes += size
        if self.bytes > self.limits.max_bytes:
            raise LimitExceeded(
                f"the attempt's changes exceed {self.limits.max_bytes} bytes "
                f"(at {shown(rel)}, {size} bytes; sparse files count at their full length)",
                "Make the step write less into the workspace (large artefacts belong outside "
                "it), or raise [workspace] max_changeset_bytes in vigil.toml.",
            )
