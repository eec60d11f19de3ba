"""Changesets rendered for people: unified diff text and a ``--stat`` summary."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from vigil.words import plural
from vigil.workspace.changeset import ChangeEntry, Changeset, compose
from vigil.workspace.objects import ObjectStore
from vigil.workspace.state import FileState

_SNIFF = 8192
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def quote_path(path: str) -> str:
    """A path as one unambiguous token, as git's ``core.quotePath`` shows it.

    A step chooses its file names: a newline in one could forge lines of a review ("(no
    other changes)"), an ESC could rewrite the screen. A name holding anything but
    printable characters (or a quote or backslash) is shown in double quotes with C
    escapes: ``\\n``, ``\\"``, ``\\xff`` for a byte that is not UTF-8, ``\\u202e`` for a
    bidi control. Every other name is shown as it is.
    """
    if path.isprintable() and not any(c in _BIDI or c in '"\\' for c in path):
        return path
    out = []
    for char in path:
        code = ord(char)
        if char in _NAMED:
            out.append(_NAMED[char])
        elif 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char in _BIDI or not char.isprintable():
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _text(objects: ObjectStore, state: FileState | None) -> list[str] | None:
    """The file's lines, [] if absent or not a file, None if it is binary."""
    if state is None or state.kind != "file" or state.sha256 is None:
        return []
    data = objects.read(state.sha256)
    if b"\0" in data[:_SNIFF]:
        return None
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError:
        return None


def _mode(state: FileState) -> str:
    return "" if state.kind == "symlink" else f" mode {state.mode:o}"


def _header(entry: ChangeEntry) -> list[str]:
    name = quote_path(entry.path)
    lines = [f"diff --vigil a/{name} b/{name}\n"]
    before, after = entry.before, entry.after
    if before is None and after is not None:
        lines.append(f"new {after.kind}{_mode(after)}\n")
    elif after is None and before is not None:
        lines.append(f"deleted {before.kind}{_mode(before)}\n")
    elif before is not None and after is not None:
        if before.kind != after.kind:
            lines.append(f"type change {before.kind} -> {after.kind}\n")
        elif before.mode != after.mode and after.kind != "symlink":
            lines.append(f"old mode {before.mode:o}\nnew mode {after.mode:o}\n")
    return lines


def _body(entry: ChangeEntry, objects: ObjectStore, context: int) -> list[str]:
    before, after = entry.before, entry.after
    if any(s is not None and s.kind == "symlink" for s in (before, after)):
        old = before.target if before is not None and before.kind == "symlink" else None
        new = after.target if after is not None and after.kind == "symlink" else None
        shown = [quote_path(t) if t is not None else "(none)" for t in (old, new)]
        return [f"symlink {shown[0]} -> {shown[1]}\n"]
    old_lines, new_lines = _text(objects, before), _text(objects, after)
    if old_lines is None or new_lines is None:
        if before is not None and after is not None and before.sha256 == after.sha256:
            return []
        name = quote_path(entry.path)
        return [f"Binary files a/{name} and b/{name} differ\n"]
    a = f"a/{quote_path(entry.path)}" if before is not None else "/dev/null"
    b = f"b/{quote_path(entry.path)}" if after is not None else "/dev/null"
    out = []
    for line in difflib.unified_diff(old_lines, new_lines, a, b, n=context):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return out


PATH_LIMIT = 50
"""Past this many paths, lists of changes summarise their largest top-level directories."""

ALL_PATHS_HINT = "--all-paths lists every path; --format json keeps them all"


def group_paths(
    items: Sequence[tuple[str, str]], *, limit: int | None = PATH_LIMIT
) -> tuple[list[int], list[str]]:
    """Which of ``items`` (path, kind of change) to show one by one, and one line for each
    top-level directory summarised instead: ``venv/: 2,031 paths (2,031 added)``.

    Up to ``limit`` items (every one when ``limit`` is None) are shown as they are.
    Beyond, the top-level directories with the most paths are summarised, largest first,
    until at most ``limit`` paths are left to show one by one. Returns the indexes of
    the items to show, in order, and the summary lines, largest directory first.
    """
    if limit is None or len(items) <= limit:
        return list(range(len(items))), []
    groups: dict[str, list[int]] = {}
    for index, (path, _) in enumerate(items):
        groups.setdefault(path.split("/", 1)[0], []).append(index)
    shown = len(items)
    folded: list[str] = []
    for top, members in sorted(groups.items(), key=lambda g: (-len(g[1]), g[0])):
        if shown <= limit or len(members) < 2:
            break
        folded.append(top)
        shown -= len(members)
    hidden = {i for top in folded for i in groups[top]}
    lines = []
    for top in folded:
        kinds: dict[str, int] = {}
        for i in groups[top]:
            kinds[items[i][1]] = kinds.get(items[i][1], 0) + 1
        detail = ", ".join(f"{n:,} {k}" for k, n in sorted(kinds.items(), key=lambda k: -k[1]))
        lines.append(f"{quote_path(top)}/: {len(groups[top]):,} paths ({detail})")
    return [i for i in range(len(items)) if i not in hidden], lines


def unified_diff(
    changeset: Changeset,
    objects: ObjectStore,
    *,
    context: int = 3,
    limit: int | None = None,
) -> str:
    """Diff text of every non-ignored change; ignored paths are counted at the end.

    With ``limit``, past that many paths the largest top-level directories are
    summarised in one comment line each instead of diffed (:func:`group_paths`).
    """
    out: list[str] = []
    ignored: list[ChangeEntry] = []
    shown = [e for e in changeset.entries if not e.ignored and not _is_plain_dir(e)]
    keep, folded = group_paths([(e.path, e.kind) for e in shown], limit=limit)
    for line in folded:
        out.append(f"# {line} not shown ({ALL_PATHS_HINT})\n")
    kept = {shown[i].path for i in keep}
    for entry in changeset.entries:
        if entry.ignored:
            ignored.append(entry)
            continue
        if entry.path not in kept:
            continue
        out.extend(_header(entry))
        out.extend(_body(entry, objects, context))
    if ignored:
        out.append(f"# {ignored_summary(ignored)}\n")
    return "".join(out)


def ignored_summary(ignored: Sequence[ChangeEntry], *, limit: int = 3) -> str:
    """One line for the ignored changes, grouped under their outermost changed path:
    ``9 ignored paths changed (git ignore rules): .pytest_cache/ (8 paths), app.log``."""
    paths = {e.path for e in ignored}
    groups: dict[str, list[ChangeEntry]] = {}
    for entry in ignored:
        parts = entry.path.split("/")
        tops = ("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        groups.setdefault(next(p for p in tops if p in paths), []).append(entry)
    named = []
    for top, members in groups.items():
        kinds = {s.kind for s in (members[0].before, members[0].after) if s is not None}
        is_dir = len(members) > 1 or "dir" in kinds
        count = f" ({len(members)} paths)" if len(members) > 1 else ""
        named.append(f"{quote_path(top)}/{count}" if is_dir else quote_path(top))
    more = f" and {len(named) - limit} more" if len(named) > limit else ""
    shown = ", ".join(named[:limit])
    return f"{plural(len(ignored), 'ignored path')} changed (git ignore rules): {shown}{more}"


def _is_plain_dir(entry: ChangeEntry) -> bool:
    """Directory creation or removal without a mode change says nothing a reader needs."""
    kinds = {s.kind for s in (entry.before, entry.after) if s is not None}
    return kinds == {"dir"} and entry.kind in ("added", "deleted")


def _line_counts(entry: ChangeEntry, objects: ObjectStore | None) -> tuple[int, int] | None:
    if objects is None:
        return None
    old, new = _text(objects, entry.before), _text(objects, entry.after)
    if old is None or new is None:
        return None
    plus = minus = 0
    for line in difflib.unified_diff(old, new, n=0):
        if line.startswith("+") and not line.startswith("+++"):
            plus += 1
        elif line.startswith("-") and not line.startswith("---"):
            minus += 1
    return plus, minus


def stat_summary(
    changeset: Changeset, objects: ObjectStore | None = None, *, limit: int | None = None
) -> str:
    """One line per changed path and a totals line, like ``git diff --stat``; with
    ``limit``, the largest top-level directories summarised past that many paths."""
    listed = [e for e in changeset.entries if not e.ignored and not _is_plain_dir(e)]
    keep, folded = group_paths([(e.path, e.kind) for e in listed], limit=limit)
    kept = {listed[i].path for i in keep}
    rows: list[tuple[str, str]] = []
    kinds: dict[str, int] = {}
    ignored = 0
    for entry in changeset.entries:
        if entry.ignored:
            ignored += 1
            continue
        if _is_plain_dir(entry):
            continue
        kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
        if entry.path not in kept:
            continue
        counts = _line_counts(entry, objects)
        detail = entry.kind if counts is None else f"{entry.kind} +{counts[0]} -{counts[1]}"
        rows.append((quote_path(entry.path), detail))
    width = max((len(p) for p, _ in rows), default=0)
    lines = [f" {p.ljust(width)} | {d}" for p, d in rows]
    lines += [f" {line}" for line in folded]
    total = ", ".join(f"{n:,} {k}" for k, n in sorted(kinds.items())) or "no changes"
    if ignored:
        total += f"; {plural(ignored, 'ignored path')}"
    lines.append(f" {plural(sum(kinds.values()), 'path')} changed: {total}")
    if folded:
        lines.append(f" ({ALL_PATHS_HINT})")
    return "\n".join(lines) + "\n"


def combined_diff(
    changesets: Sequence[Changeset], objects: ObjectStore, *, limit: int | None = None
) -> str:
    """The diff of several stacked changesets as if applied in order (dry-run review)."""
    return unified_diff(compose(changesets), objects, limit=limit)
