"""Unified diffs in model replies: find them, check their paths, and the command applying one.

A reply may hold the diff in a fenced block (```diff or ```patch) or raw. The paths it
touches must stay inside the workspace (no absolute paths, no ``..``); ``git apply``
checks that too, but the check here makes the refusal clear and works the same in
snapshot mode. ``git apply`` is used because it applies all or nothing, works outside a
repository, and ``--recount`` forgives the wrong hunk line counts models often write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

_FENCE = re.compile(r"^(`{3,}|~{3,})[ \t]*(diff|patch|udiff)?[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)
_HEADER = re.compile(r"^(---|\+\+\+) (\S+)", re.M)
_GIT_HEADER = re.compile(r"^diff --git ", re.M)
# Apply outside any repository the workspace may sit in: inside one, git apply would
# silently skip paths outside the current directory.
APPLY_ENV = {"GIT_DIR": "/nonexistent/vigil-no-repository"}


@dataclass(frozen=True)
class Patch:
    """A unified diff and the ``-p`` level its paths need."""

    text: str
    strip: int
    paths: tuple[str, ...]

    def apply_argv(self) -> list[str]:
        """The command that applies this patch (fed on stdin) in the current directory."""
        return ["git", "apply", "--recount", "--whitespace=nowarn", f"-p{self.strip}", "-"]


def _looks_like_diff(text: str) -> bool:
    return bool(_GIT_HEADER.search(text)) or (
        bool(re.search(r"^--- ", text, re.M)) and bool(re.search(r"^\+\+\+ ", text, re.M))
    )


def extract_diff(reply: str) -> str | None:
    """The unified diff in a model's reply, or None if it holds none."""
    blocks = [m.group(3) for m in _FENCE.finditer(reply)]
    tagged = [m.group(3) for m in _FENCE.finditer(reply) if m.group(2)]
    for block in tagged + blocks:
        if _looks_like_diff(block):
            return block if block.endswith("\n") else block + "\n"
    if not _looks_like_diff(reply):
        return None
    start = min(
        m.start()
        for m in (re.search(r"^diff --git ", reply, re.M), re.search(r"^--- ", reply, re.M))
        if m
    )
    text = reply[start:]
    return text if text.endswith("\n") else text + "\n"


class UnsafePatch(ValueError):
    """A patch that touches paths outside the workspace."""


def parse_patch(text: str) -> Patch:
    """The paths ``text`` touches and its strip level; UnsafePatch for paths leaving the tree."""
    names = [m.group(2) for m in _HEADER.finditer(text)]
    names = [n for n in names if n != "/dev/null"]
    if not names:
        raise UnsafePatch("the diff names no files")
    prefixed = all(n.startswith(("a/", "b/")) for n in names)
    strip = 1 if prefixed else 0
    paths: list[str] = []
    bad: list[str] = []
    for name in names:
        path = PurePosixPath(name)
        rel = PurePosixPath(*path.parts[strip:]) if len(path.parts) > strip else path
        if path.is_absolute() or ".." in rel.parts or str(rel) in ("", "."):
            bad.append(name)
        elif str(rel) not in paths:
            paths.append(str(rel))
    if bad:
        raise UnsafePatch(f"the diff touches paths outside the workspace: {', '.join(bad)}")
    return Patch(text, strip, tuple(paths))
