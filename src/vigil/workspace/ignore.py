"""Git's ignore rules, used to flag changes to build output and caches for display.

A path is ignored the way ``git check-ignore`` decides it:

- each leading directory is checked first; a path inside an ignored directory is ignored
  and no pattern can re-include it;
- then the path itself against, in falling precedence: the ``.gitignore`` of each
  directory on its path, deepest first (patterns relative to that directory), then
  ``.git/info/exclude``, then the user's global excludes file (``core.excludesFile``);
  the first of these with a matching pattern decides, and within one file the last
  matching pattern does (``!`` re-includes).

Only the ``.gitignore`` files of the directories on the paths asked about are read, each
once. They are read through a :data:`Reader`: capture reads the attempt's own view (a
step may well write ``.pytest_cache/.gitignore``), so every file is opened beneath its
root without following a link, only if it is a regular file of at most
:data:`MAX_RULES_FILE` bytes; anything else counts as absent. Rules only ever change how
a change is shown (``ChangeEntry.ignored``), never whether it lands or is refused.

The patterns themselves are matched by :mod:`vigil.workspace.gitignore`.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from vigil.workspace.beneath import Tree, UnsafePath, components, open_regular
from vigil.workspace.changeset import ChangeEntry
from vigil.workspace.gitignore import Pattern, as_text, last_match, parse

Reader = Callable[[str], bytes | None]
"""The bytes of a small regular file at a tree-relative path, or None (absent or unusable)."""

MAX_RULES_FILE = 1 << 20
"""A rules file larger than this is treated as absent."""
MAX_RULES_LINES = 10_000
"""A rules file of more lines than this is treated as absent."""
WORK_LIMIT = 50_000_000
"""How many pattern tests one :class:`IgnoreRules` makes at most (a compiled pattern counts
as :data:`_COMPILE_COST` tests): a step's rules files cannot stall capture. Past it, no
further path is flagged."""
_COMPILE_COST = 150

INFO_EXCLUDE = ".git/info/exclude"
_GIT_TIMEOUT_S = 10


def read_capped(fd: int) -> bytes | None:
    """Up to :data:`MAX_RULES_FILE` bytes from ``fd``; None if it holds more."""
    chunks = []
    size = 0
    while chunk := os.read(fd, MAX_RULES_FILE + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_RULES_FILE:
            return None
    return b"".join(chunks)


def read_at(dir_fd: int, name: str) -> bytes | None:
    """The regular file ``name`` in ``dir_fd`` (never through a link, never a FIFO or a
    device, at most :data:`MAX_RULES_FILE` bytes), or None."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_RULES_FILE:
            return None
        fd = open_regular(dir_fd, name, st)
    except OSError:
        return None
    try:
        return read_capped(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_beneath(tree: Tree, rel: str) -> bytes | None:
    """:func:`read_at` for ``rel`` resolved beneath ``tree`` without following links."""
    try:
        with tree.parent(rel) as (dir_fd, name):
            return read_at(dir_fd, name)
    except (OSError, UnsafePath):
        return None


def tree_reader(root: Path) -> Reader:
    """Read files beneath ``root`` (opened afresh per read) without following links."""

    def read(rel: str) -> bytes | None:
        try:
            with Tree(root) as tree:
                return read_beneath(tree, rel)
        except OSError:
            return None

    return read


def _read_user_file(path: Path) -> bytes | None:
    """The user's own file (links followed, as git does), if it is a small regular file."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_RULES_FILE:
            return None
        return read_capped(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def default_excludes_file() -> Path | None:
    """Git's default global excludes file: ``$XDG_CONFIG_HOME/git/ignore`` or
    ``~/.config/git/ignore``."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    if xdg:
        return Path(xdg) / "git" / "ignore"
    home = os.environ.get("HOME")
    return Path(home) / ".config" / "git" / "ignore" if home else None


@functools.cache
def global_excludes_file() -> Path | None:
    """The user's global excludes file, asked of git once per process.

    ``git config --path --get core.excludesFile`` runs outside any repository (so only the
    system and global configuration count, never a workspace's ``.git/config``, which a
    step may have written) with this process's environment, HOME included. Without git,
    or with the setting unset, git's default path; a relative setting names no file.
    """
    git = shutil.which("git")
    if git is None:
        return default_excludes_file()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_DIR", "GIT_WORK"))}
    env["GIT_DIR"] = os.devnull  # not a repository: no repository's config is read
    try:
        proc = subprocess.run(
            [git, "config", "--path", "--get", "core.excludesFile"],
            cwd="/",
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return default_excludes_file()
    value = os.fsdecode(proc.stdout.rstrip(b"\n"))
    if proc.returncode != 0 or not value:
        return default_excludes_file()
    path = Path(value)
    return path if path.is_absolute() else None


@dataclass(frozen=True)
class _Level:
    """A non-empty ``.gitignore`` on a path, and the next one above it."""

    start: int  # where the path relative to the file's directory begins (bytewise text)
    patterns: tuple[Pattern, ...]
    above: _Level | None


class IgnoreRules:
    """Git's ignore rules over one tree, read through ``read`` as paths are asked about.

    ``IgnoreRules()`` ignores nothing. ``global_excludes`` is the user's excludes file
    (see :meth:`of`, which finds it). ``work_limit``: see :data:`WORK_LIMIT`.
    """

    def __init__(
        self,
        read: Reader | None = None,
        global_excludes: Path | None = None,
        *,
        work_limit: int = WORK_LIMIT,
    ) -> None:
        self._read = read
        self._global_path = global_excludes
        self._work_limit = work_limit
        self._work = 0
        # Per directory: the .gitignore files that apply inside it, and whether it is
        # ignored itself (by its own verdict or one of a directory above).
        self._dirs: dict[str, tuple[_Level | None, bool]] = {}
        self._fallback: tuple[tuple[Pattern, ...], ...] | None = None

    @classmethod
    def of(cls, read: Reader) -> IgnoreRules:
        """The rules of the tree ``read`` reads, with the user's global excludes file."""
        return cls(read, global_excludes_file())

    @classmethod
    def for_workspace(cls, root: Path) -> IgnoreRules:
        """The rules of the tree at ``root`` as it is now."""
        return cls.of(tree_reader(root))

    def _over(self) -> bool:
        return self._work > self._work_limit

    def _parse(self, data: bytes | None) -> tuple[Pattern, ...]:
        if data is None or self._over():
            return ()
        if data.count(b"\n") + (not data.endswith(b"\n")) > MAX_RULES_LINES:
            return ()
        patterns = parse(data)
        self._work += _COMPILE_COST * len(patterns)
        return patterns

    def _rules_file(self, rel: str) -> tuple[Pattern, ...]:
        read = None if self._over() else self._read
        return self._parse(None if read is None else read(rel))

    def _lowest(self) -> tuple[tuple[Pattern, ...], ...]:
        """``.git/info/exclude`` then the global excludes file."""
        if self._fallback is None:
            data = None if self._global_path is None else _read_user_file(self._global_path)
            self._fallback = (self._rules_file(INFO_EXCLUDE), self._parse(data))
        return self._fallback

    def _verdict(self, text: str, is_dir: bool, levels: _Level | None) -> bool:
        """The verdict on the path ``text`` (bytewise) itself under ``levels``, deepest
        first, then the excludes files; its directories are taken as not ignored."""
        name = text[text.rfind("/") + 1 :]
        tries: list[tuple[tuple[Pattern, ...], str]] = []
        while levels is not None:
            tries.append((levels.patterns, text[levels.start :]))
            levels = levels.above
        tries += [(patterns, text) for patterns in self._lowest() if patterns]
        for patterns, rel in tries:
            # A pattern test costs more on a longer path: a step's paths may be deep.
            self._work += len(patterns) * (1 + len(rel) // 64)
            if self._over():
                return False
            found = last_match(patterns, rel, name, is_dir)
            if found is not None:
                return found
        return False

    def _dir(self, path: str) -> tuple[_Level | None, bool]:
        """The entry of directory ``path`` ("" for the root), computed from the deepest
        known directory above it down, one directory at a time."""
        todo = []
        while path not in self._dirs and path:
            todo.append(path)
            path = path.rpartition("/")[0]
        if not path and path not in self._dirs:
            self._dirs[""] = (self._level("", None), False)
        levels, ignored = self._dirs[path]
        for sub in reversed(todo):
            ignored = ignored or self._verdict(as_text(sub), True, levels)
            if not ignored:  # as git, which never looks inside an ignored directory
                levels = self._level(sub, levels)
            self._dirs[sub] = (levels, ignored)
        return levels, ignored

    def _level(self, directory: str, above: _Level | None) -> _Level | None:
        """``above`` with the ``.gitignore`` of ``directory`` on top, if it has patterns."""
        patterns = self._rules_file(f"{directory}/.gitignore" if directory else ".gitignore")
        if not patterns:
            return above
        start = len(os.fsencode(directory)) + 1 if directory else 0
        return _Level(start, patterns, above)

    def matches(self, path: str, *, is_dir: bool = False) -> bool:
        """Whether git would ignore ``path`` (a directory if ``is_dir``)."""
        if self._read is None and self._global_path is None:
            return False
        try:
            components(path)
        except UnsafePath:
            return False
        if is_dir:
            return self._dir(path)[1]
        levels, ignored = self._dir(path.rpartition("/")[0])
        return ignored or self._verdict(as_text(path), False, levels)

    def flag(
        self, entries: Iterable[ChangeEntry], *, before: IgnoreRules | None = None
    ) -> tuple[ChangeEntry, ...]:
        """``entries`` with ``ignored`` set.

        A deletion is judged by ``before`` (the rules of the tree it was deleted from)
        when given, anything else by these rules. A directory the attempt created or
        removed is flagged too when every change below it is, as ``git status
        --ignored`` shows such a directory.
        """
        entries = list(entries)
        made_dirs = {
            e.path
            for e in entries
            if e.before is None and e.after is not None and e.after.kind == "dir"
        }
        out = []
        for e in entries:
            rules = before if before is not None and e.after is None else self
            state = e.after if e.after is not None else e.before
            is_dir = state is not None and state.kind == "dir"
            hideable = not _modifies_existing(e) and not _shown_rule_file(e, made_dirs)
            out.append(replace(e, ignored=hideable and rules.matches(e.path, is_dir=is_dir)))
        return _flag_ignored_dirs(out)


def _shown_rule_file(entry: ChangeEntry, made_dirs: set[str]) -> bool:
    """Whether ``entry`` changes a file that decides what else is ignored in a place where
    that matters: made or changed, but for a new ``.gitignore`` in a directory this change made (a
    tool's cache marking itself, as pytest's does), which can hide only paths as new as
    itself. A ``.gitignore`` that ignores itself could otherwise hide the rule that hides
    the rest."""
    parent, _, name = entry.path.rpartition("/")
    if (name != ".gitignore" and entry.path != INFO_EXCLUDE) or entry.after is None:
        return False  # not a rules file, or deleted: that can only show more, never less
    return not (entry.before is None and parent and parent in made_dirs)


def _modifies_existing(entry: ChangeEntry) -> bool:
    """A change to the content, mode or type of a path that existed before the change.

    Never summarised as ignored, whatever the rules say: an earlier task (or this one)
    could add a rule ignoring ``deploy.sh`` and so hide, from the person reviewing, the
    line this task adds to it. New ignored paths (caches, build output, a fresh venv) and
    deletions of ignored paths are still summarised.
    """
    return entry.before is not None and entry.after is not None


def _flag_ignored_dirs(entries: list[ChangeEntry]) -> tuple[ChangeEntry, ...]:
    """Flag added or removed directories holding only ignored changes (deepest first, so
    a directory flagged here counts as ignored for the one above it)."""
    shown: set[str] = set()  # directories with a change below that is not ignored
    hidden: set[str] = set()  # directories with an ignored change below
    out = []
    for e in sorted(entries, key=lambda e: e.path.count("/"), reverse=True):
        plain_dir = {s.kind for s in (e.before, e.after) if s is not None} == {"dir"}
        made_or_removed = plain_dir and (e.before is None or e.after is None)
        if made_or_removed and e.path in hidden and e.path not in shown:
            e = replace(e, ignored=True)
        parts = e.path.split("/")
        for i in range(1, len(parts)):
            (hidden if e.ignored else shown).add("/".join(parts[:i]))
        out.append(e)
    return tuple(out)
