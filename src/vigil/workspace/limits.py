"""How much one attempt may change: limits on its changeset, checked before anything is copied.

A step that writes a huge or sparse file, or millions of files, fails that attempt with
``VIGIL-LIMIT`` instead of filling the disk with copies in ``.vigil/objects/``. Sizes are
apparent sizes (``st_size``): a sparse file counts at its full length, because commit and
review would write and show it at that length.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ByteSize, ConfigDict, Field

from vigil.errors import LimitExceeded

DEFAULT_MAX_BYTES = 2 * 1024**3
DEFAULT_MAX_FILES = 100_000


class WorkspaceConfig(BaseModel):
    """The ``[workspace]`` section of ``vigil.toml``."""

    # Other keys of the section belong to the sandbox; each reader checks its own.
    model_config = ConfigDict(extra="ignore", frozen=True)

    isolation: str = "auto"
    max_changeset_bytes: ByteSize = Field(ByteSize(DEFAULT_MAX_BYTES), ge=0)
    max_changeset_files: int = Field(DEFAULT_MAX_FILES, ge=0)


@dataclass(frozen=True)
class Limits:
    """Per-attempt limits on a changeset: content bytes to store and paths changed."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_files: int = DEFAULT_MAX_FILES

    @classmethod
    def from_config(cls, section: WorkspaceConfig) -> Limits:
        """The limits ``[workspace]`` sets."""
        return cls(int(section.max_changeset_bytes), section.max_changeset_files)

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
        """Count one changed path."""
        self.files += 1
        if self.files > self.limits.max_files:
            raise LimitExceeded(
                f"the attempt changed more than {self.limits.max_files} paths (at {rel})",
                "Make the step change fewer files (clean up generated output), or raise "
                "[workspace] max_changeset_files in vigil.toml.",
            )

    def content(self, rel: str, size: int) -> None:
        """Count ``size`` bytes of content that would be stored for ``rel``."""
        self.bytes += size
        if self.bytes > self.limits.max_bytes:
            raise LimitExceeded(
                f"the attempt's changes exceed {self.limits.max_bytes} bytes "
                f"(at {rel}, {size} bytes; sparse files count at their full length)",
                "Make the step write less into the workspace (large artefacts belong outside "
                "it), or raise [workspace] max_changeset_bytes in vigil.toml.",
            )
