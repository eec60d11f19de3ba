"""The patterns of one gitignore-style file, matched as git matches them.

Pure code: :func:`parse` turns a file's bytes into :class:`Pattern` objects and
:func:`last_match` gives the verdict of the last one that matches a path. Precedence
between files and directories is :mod:`vigil.workspace.ignore`'s.

Written here rather than taken from pathspec (which vigil uses for ``allowed_paths``):
pathspec answers "does this path, or a directory above it, match", folding a directory
pattern over everything below it and simplifying some patterns (``a/**/`` matches ``a``
itself there). Git's rules need "does this pattern match exactly this path", asked once
per directory level, so the translation follows git's ``dir.c`` and ``wildmatch.c``:

- ``!`` negates; unescaped trailing spaces and a CR before the newline are dropped; a
  trailing ``/`` matches directories only;
- a pattern with no other ``/`` matches the last name of the path; any other pattern
  matches the whole path relative to the file's directory (a leading ``/`` only anchors);
- ``*``, ``?`` and ``[...]`` never match ``/``; ``**`` between slashes (or at either end)
  matches any number of directories, elsewhere it is ``*``;
- matching is bytewise (paths and patterns are compared as bytes), case-sensitive.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

_CLASSES = {
    "alnum": r"0-9A-Za-z",
    "alpha": r"A-Za-z",
    "blank": r" \t",
    "cntrl": r"\x00-\x1f\x7f",
    "digit": r"0-9",
    "graph": r"\x21-\x7e",
    "lower": r"a-z",
    "print": r"\x20-\x7e",
    "punct": r"\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e",
    "space": r" \t\n\r",
    "upper": r"A-Z",
    "xdigit": r"0-9A-Fa-f",
}


@dataclass(frozen=True)
class Pattern:
    """One pattern line: what it matches, and whether a match ignores or re-includes."""

    regex: re.Pattern[str]
    ignore: bool  # False for a ``!`` pattern
    basename: bool  # matched against the path's last name only
    dir_only: bool

    def matches(self, rel: str, name: str, is_dir: bool) -> bool:
        """Whether this pattern matches the path ``rel`` (last name ``name``) itself.

        Both are bytewise text (see :func:`as_text`).
        """
        if self.dir_only and not is_dir:
            return False
        return self.regex.fullmatch(name if self.basename else rel) is not None


def as_text(path: str) -> str:
    """A path as the bytes git compares, one character per byte."""
    return os.fsencode(path).decode("latin-1")


def _trim_trailing_spaces(line: str) -> str:
    """Git's ``trim_trailing_spaces``: unescaped trailing spaces are no part of a pattern."""
    last_space = None
    i = 0
    while i < len(line):
        if line[i] == " ":
            if last_space is None:
                last_space = i
        else:
            if line[i] == "\\":
                i += 1
                if i == len(line):
                    return line
            last_space = None
        i += 1
    return line if last_space is None else line[:last_space]


def _bracket(p: str, i: int) -> tuple[str, int] | None:
    """The regex for the bracket expression opening at ``p[i]`` and the index after it;
    None if it is unterminated or names an unknown class (git then matches nothing)."""
    n = len(p)
    j = i + 1
    negated = j < n and p[j] in "!^"
    if negated:
        j += 1
    items: list[str] = []
    prev: str | None = None  # the last single character, which may start a range
    first = True
    while True:
        if j >= n:
            return None
        c = p[j]
        if c == "]" and not first:
            break
        first = False
        if c == "\\":
            j += 1
            if j >= n:
                return None
            items.append(re.escape(p[j]))
            prev = p[j]
        elif c == "-" and prev is not None and j + 1 < n and p[j + 1] != "]":
            j += 1
            high = p[j]
            if high == "\\":
                j += 1
                if j >= n:
                    return None
                high = p[j]
            if prev <= high:
                items.append(f"{re.escape(prev)}-{re.escape(high)}")
            prev = None
        elif c == "[" and j + 1 < n and p[j + 1] == ":":
            start = j + 2
            end = p.find("]", start)
            if end < 0:
                return None
            if end == start or p[end - 1] != ":":
                # No ":]": the "[" is an ordinary member, and scanning goes on after it.
                items.append(re.escape("["))
                prev = "["
            else:
                members = _CLASSES.get(p[start : end - 1])
                if members is None:
                    return None
                items.append(members)
                prev = None
                j = end
        else:
            items.append(re.escape(c))
            prev = c
        j += 1
    body = "".join(items)
    if negated:
        return f"[^/{body}]", j + 1
    return (f"(?!/)[{body}]" if body else "(?!)"), j + 1


def _literal_length(pattern: str) -> int:
    """Git's ``simple_length``: how many characters come before the first special one."""
    return next((i for i, c in enumerate(pattern) if c in "*?[\\"), len(pattern))


def translate(pattern: str, *, start: int = 0) -> str | None:
    """The regex (for ``fullmatch``) of one wildmatch pattern; None if it can match nothing.

    ``start``: where git starts wildmatch (it compares a literal prefix first), which
    counts as a boundary for ``**`` as a slash does.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            bounded = j - i >= 2 and (i in (0, start) or pattern[i - 1] == "/")
            if bounded and j == n:
                out.append(".*")
            elif bounded and pattern[j] == "/":
                out.append("(?:.*/)?")  # any directories, or none
                j += 1
            elif bounded and pattern.startswith("\\/", j):
                out.append(".*/")
                j += 2
            else:
                out.append("[^/]*")
            i = j
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            bracket = _bracket(pattern, i)
            if bracket is None:
                return None
            out.append(bracket[0])
            i = bracket[1]
        elif c == "\\":
            if i + 1 == n:
                return None
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def parse_line(line: str) -> Pattern | None:
    """One line of a rules file (bytewise text, newline removed); None for a blank line, a
    comment or a pattern that can match nothing."""
    line = _trim_trailing_spaces(line.removesuffix("\r"))
    if not line or line.startswith("#"):
        return None
    ignore = not line.startswith("!")
    body = line if ignore else line[1:]
    dir_only = body.endswith("/")
    if dir_only:
        body = body[:-1]
    basename = "/" not in body
    if not basename and body.startswith("/"):
        body = body[1:]
    if not body:
        return None
    regex = translate(body, start=0 if basename else _literal_length(body))
    if regex is None:
        return None
    return Pattern(re.compile(regex, re.DOTALL), ignore, basename, dir_only)


def parse(data: bytes) -> tuple[Pattern, ...]:
    """The patterns of one rules file, in order."""
    text = data.removeprefix(b"\xef\xbb\xbf").decode("latin-1")
    return tuple(p for line in text.split("\n") if (p := parse_line(line)) is not None)


def last_match(patterns: Sequence[Pattern], rel: str, name: str, is_dir: bool) -> bool | None:
    """Whether the last of ``patterns`` to match the path ignores it; None if none matches."""
    for pattern in reversed(patterns):
        if pattern.matches(rel, name, is_dir):
            return pattern.ignore
    return None
