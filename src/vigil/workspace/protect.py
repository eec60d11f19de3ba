"""Files only a person may change, recognised by what they are, not by how they are spelled.

The protected paths of a workspace are ``vigil.toml`` and vigil's own directories inside
it (``.vigil/``, and the user config directory when it lies in the workspace). A change
is refused at capture and again at commit when:

- any leading run of its path's components is a protected path, compared after Unicode
  normalisation and case folding: ``VIGIL.TOML`` or ``.Vigil/x`` is refused on every
  filesystem, so a case-insensitive one cannot alias them;
- it makes a symbolic link whose target text has a protected name in any component
  (``alias -> vigil.toml``, ``x -> ../.vigil``, ``y -> d/VIGIL.toml``): conservative,
  it also refuses a link to another project's ``vigil.toml``;
- what it would write through is a protected inode (``st_dev``, ``st_ino``): a new file
  that is a hard link to the policy file (capture), or an existing entry or parent
  directory at commit time that is one of them, whatever its name.

Commit never follows links (see :mod:`vigil.workspace.beneath`), so a path that reaches a
protected file only through a link is a conflict before it is ever written.
"""

from __future__ import annotations

import functools
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vigil.workspace.beneath import Blocked, Tree, UnsafePath, components
from vigil.workspace.state import FileState


def fold(name: str) -> str:
    """``name`` as a case-insensitive filesystem would compare it."""
    return unicodedata.normalize("NFKC", name).casefold()


@dataclass(frozen=True)
class Protection:
    """The protected paths of one workspace and the identities they had when looked at."""

    paths: tuple[str, ...] = ()
    inodes: frozenset[tuple[int, int]] = field(default_factory=frozenset)

    @classmethod
    def of(cls, root: Path, paths: Iterable[str]) -> Protection:
        """Protection for ``paths`` of the workspace at ``root``, identities read now."""
        kept = tuple(sorted({p.strip("/") for p in paths if p.strip("/")}))
        inodes: set[tuple[int, int]] = set()
        try:
            tree = Tree(root)
        except FileNotFoundError:
            return cls(kept, frozenset())
        with tree:
            for rel in kept:
                try:
                    st = tree.lstat(rel)
                except (Blocked, UnsafePath, OSError):
                    continue
                if st is not None:
                    inodes.add((st.st_dev, st.st_ino))
        return cls(kept, frozenset(inodes))

    @functools.cached_property
    def _folded(self) -> list[list[str]]:
        # Computed once: a commit asks for every path of a changeset of thousands.
        return [[fold(c) for c in p.split("/")] for p in self.paths]

    def path_reason(self, rel: str) -> str | None:
        """Why ``rel`` may not be changed by a step, or None."""
        try:
            parts = [fold(c) for c in components(rel)]
        except UnsafePath as exc:
            return str(exc)
        why = git_reason(rel, parts)
        if why is not None:
            return why
        for path, folded in zip(self.paths, self._folded, strict=True):
            if parts[: len(folded)] == folded:
                return f"{rel} is {path}" if len(parts) == len(folded) else f"{rel} is in {path}"
        return None

    def link_reason(self, rel: str, target: str) -> str | None:
        """Why a symbolic link at ``rel`` to ``target`` may not be made, or None."""
        names = {folded[-1] for folded in self._folded}
        for part in target.split("/"):
            if fold(part) in names:
                return f"{rel} is a link to {target!r}, which names a protected path"
        return None

    def identity_reason(self, rel: str, st: os.stat_result) -> str | None:
        """Why ``rel``, whose lstat is ``st``, is a protected file under another name."""
        if (st.st_dev, st.st_ino) in self.inodes:
            return f"{rel} is a protected file or directory under another name (a hard link)"
        return None

    def change_reason(self, rel: str, after: FileState | None) -> str | None:
        """Why a change of ``rel`` to ``after`` may not be made, by name or link target."""
        reason = self.path_reason(rel)
        if reason is None and after is not None and after.kind == "symlink":
            reason = self.link_reason(rel, after.target or "")
        return reason

    def refusals(self, entries: Iterable[tuple[str, FileState | None]]) -> list[str]:
        """One reason per refused (path, after-state) pair, in order."""
        out = []
        for rel, after in entries:
            reason = self.change_reason(rel, after)
            if reason is not None:
                out.append(reason)
        return out


# What a step may change inside a repository's git directory: what `git add`, `git commit`,
# `git fetch`, `git merge`, `git rebase` and `git stash` write. Nothing here names a
# command git runs; everything else (config, hooks, commondir, info/attributes, modules,
# worktrees, alternates of objects) could, and a `.git` made or replaced by a step could
# point git at a directory holding any of them.
GIT_WRITABLE = frozenset(
    {
        "objects",
        "refs",
        "logs",
        "index",
        "head",
        "orig_head",
        "fetch_head",
        "merge_head",
        "merge_msg",
        "merge_mode",
        "auto_merge",
        "cherry_pick_head",
        "revert_head",
        "rebase_head",
        "commit_editmsg",
        "packed-refs",
        "shallow",
        "rebase-merge",
        "rebase-apply",
        "sequencer",
        "index.lock",
        "head.lock",
        "packed-refs.lock",
    }
)


def git_reason(rel: str, parts: Sequence[str]) -> str | None:
    """Why a change of ``rel`` (its components ``parts``, folded) could make git run a
    step's command on the host, or None: any entry named ``.git`` itself (made, removed or
    replaced: a repository a step creates, or a pointer to a git directory it planted), and
    anything in a ``.git`` directory at any depth outside :data:`GIT_WRITABLE`
    (``objects/info/alternates`` included)."""
    for i, part in enumerate(parts):
        if part != ".git":
            continue
        rest = parts[i + 1 :]
        if not rest:
            return f"{rel} is a repository's git directory or pointer (only a person makes one)"
        if rest in (["info"], ["info", "exclude"]):
            continue  # ignore rules only: a change to them is always shown (ignore.py)
        if rest[0] not in GIT_WRITABLE or rest[:3] == ["objects", "info", "alternates"]:
            return f"{rel} is git metadata that can name a command git runs"
    return None


def summary(reasons: Sequence[str]) -> str:
    """The reasons in one line, the first few spelled out."""
    shown = "; ".join(reasons[:3]) + (" ..." if len(reasons) > 3 else "")
    return f"the step changed a protected path: {shown}"
