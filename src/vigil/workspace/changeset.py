"""A changeset: the file changes one attempt made, with pre- and post-images by hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from vigil.workspace.state import FileState

if TYPE_CHECKING:
    from vigil.workspace.objects import ObjectStore

ChangeKind = Literal["added", "deleted", "modified", "mode", "symlink", "type"]
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ChangeEntry:
    """One path's change: what was there before and after (None = absent)."""

    path: str
    before: FileState | None
    after: FileState | None
    ignored: bool = False

    @property
    def kind(self) -> ChangeKind:
        """What sort of change this is, in the words a diff uses."""
        before, after = self.before, self.after
        if before is None:
            return "added"
        if after is None:
            return "deleted"
        if before.kind != after.kind:
            return "type"
        if after.kind == "symlink":
            return "symlink"
        if before.sha256 != after.sha256:
            return "modified"
        return "mode"

    def inverse(self) -> ChangeEntry:
        """The change that undoes this one."""
        return replace(self, before=self.after, after=self.before)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "path": self.path,
            "kind": self.kind,
            "before": None if self.before is None else self.before.to_dict(),
            "after": None if self.after is None else self.after.to_dict(),
            "ignored": self.ignored,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChangeEntry:
        """Inverse of :meth:`to_dict`."""
        before, after = data.get("before"), data.get("after")
        return cls(
            path=str(data["path"]),
            before=None if before is None else FileState.from_dict(before),
            after=None if after is None else FileState.from_dict(after),
            ignored=bool(data.get("ignored", False)),
        )


@dataclass(frozen=True)
class Changeset:
    """The changes of one attempt, sorted by path; JSON round-trips exactly."""

    entries: tuple[ChangeEntry, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(sorted(self.entries, key=lambda e: e.path)))

    @property
    def is_empty(self) -> bool:
        """True when the attempt changed nothing."""
        return not self.entries

    @property
    def id(self) -> str:
        """A stable name for this changeset: the hash of its canonical JSON."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:24]

    @property
    def paths(self) -> list[str]:
        """Every changed path."""
        return [e.path for e in self.entries]

    def inverse(self) -> Changeset:
        """The changeset that undoes this one."""
        return Changeset(tuple(e.inverse() for e in self.entries))

    def object_hashes(self) -> set[str]:
        """Hashes of every pre- and post-image blob this changeset refers to."""
        out: set[str] = set()
        for entry in self.entries:
            for st in (entry.before, entry.after):
                if st is not None and st.sha256 is not None:
                    out.add(st.sha256)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as stored in the journal."""
        return {"version": FORMAT_VERSION, "entries": [e.to_dict() for e in self.entries]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Changeset:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(ChangeEntry.from_dict(e) for e in data.get("entries", ())))

    def diff(self, objects: ObjectStore, *, context: int = 3, limit: int | None = None) -> str:
        """Unified diff of this changeset from the stored objects (``limit``: see
        :func:`vigil.workspace.render.unified_diff`)."""
        from vigil.workspace.render import unified_diff

        return unified_diff(self, objects, context=context, limit=limit)

    def stat(self, *, limit: int | None = None) -> str:
        """A ``git diff --stat`` style summary."""
        from vigil.workspace.render import stat_summary

        return stat_summary(self, limit=limit)


def compose(changesets: Sequence[Changeset]) -> Changeset:
    """One changeset with the effect of applying ``changesets`` in order."""
    first: dict[str, ChangeEntry] = {}
    last: dict[str, ChangeEntry] = {}
    for cs in changesets:
        for entry in cs.entries:
            first.setdefault(entry.path, entry)
            last[entry.path] = entry
    out = []
    for path, head in first.items():
        tail = last[path]
        if head.before != tail.after:
            out.append(ChangeEntry(path, head.before, tail.after, head.ignored or tail.ignored))
    return Changeset(tuple(out))
