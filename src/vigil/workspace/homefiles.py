"""What a step may use of the host outside the workspace: declared caches, git's config.

``[workspace] caches`` names host directories (``~/.cache/pip``) that every sandbox mounts
read-write at the same path: a step's tools fill them, the next attempt and the next run
find them, and no changeset ever holds them. A cache is a live host directory, so it may
never be, contain or lie inside anything vigil keeps from steps: the state directory, the
user configuration directory (keys, grants), ``vigil.toml``, the workspace itself, the
home directory as a whole, ``/`` or a system tree. :func:`check_caches` refuses such a
cache with VIGIL-CACHE-PATH before anything runs; it compares resolved paths component by
component and, where both exist, the identities (device and inode) of the directories
each really passes through, so a link, a ``..`` or a bind mount that leads there is
recognised.

:func:`git_config_files` names the host's git configuration (``~/.gitconfig`` and
``$XDG_CONFIG_HOME/git/config``), which sandboxes show read-only in the step's private
home so that ``git commit`` finds the author's identity.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vigil.errors import ConfigError
from vigil.workspace.hidden import Hidden
from vigil.workspace.rootfs import SYSTEM_DIRS, under

# Host trees a cache may be neither nor hold: the sandbox shows them itself, or not at all.
_HELD_BY_NONE = (
    *("/", "/proc", "/sys", "/dev", "/run", "/var/run", "/tmp", "/home", "/root"),
    *("/var", "/var/tmp", "/etc", "/opt", "/boot", "/srv", "/mnt", "/media"),
)
# System trees a cache may not lie in either (a step would write the host's programs).
_SYSTEM = (*SYSTEM_DIRS, "/etc", "/proc", "/sys", "/dev", "/boot")


class CachePathRefused(ConfigError):
    """A declared cache would expose or overlap what vigil keeps from steps."""

    code = "VIGIL-CACHE-PATH"
    title = "a [workspace] caches entry overlaps what vigil keeps from steps"
    remedy = (
        "Declare the tool's own cache directory (e.g. ~/.cache/pip): not the home directory, "
        "/, a system tree, the workspace, vigil's state or the user configuration directory."
    )


@dataclass(frozen=True)
class Guarded:
    """A path a cache may not be, contain or lie in, and what to call it."""

    path: Path
    what: str


def program_dirs(environ: Mapping[str, str] | None = None) -> tuple[list[str], list[str]]:
    """Where the host finds programs, and vigil's own installation: each directory on
    ``PATH``; vigil's prefixes, its interpreter's directory and ``sys.path``.

    vigil runs programs from ``PATH`` on the host (``git`` for the ignore rules,
    ``setpriv``, a secret's ``command``), and so do the user's shells; it imports its own
    code from its installation. A cache holding either would let a step plant a program or
    a module that runs on the host as vigil's user (root, when vigil is root)."""
    env = os.environ if environ is None else environ
    path = env.get("PATH", "").split(os.pathsep)
    install = [sys.prefix, sys.base_prefix, os.path.dirname(sys.executable), *sys.path]

    def real(dirs: Sequence[str]) -> list[str]:
        found: list[str] = []
        for raw in dirs:
            if raw and os.path.isabs(raw) and os.path.realpath(raw) not in found:
                found.append(os.path.realpath(raw))
        return found

    return real(path), real(install)


def expand(entry: str, home: str | None) -> str:
    """``entry`` with a leading ``~`` replaced by ``home``, normalised (not resolved)."""
    if entry == "~" or entry.startswith("~/"):
        if not home or not os.path.isabs(home):
            raise CachePathRefused(
                f"[workspace] caches entry {entry!r} starts with ~ but HOME is not set",
                "Set HOME, or write the cache as an absolute path.",
            )
        entry = home + entry[1:]
    return os.path.normpath(entry)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _lineage(path: str) -> list[str]:
    """``path`` and each directory above it, to ``/``."""
    out = [path]
    while path != "/":
        path = os.path.dirname(path)
        out.append(path)
    return out


def _inside(path: str, base: str) -> bool:
    """Whether the resolved ``path`` is ``base`` or lies in it, by name or by identity."""
    if under(path, base):
        return True
    key = _identity(base)
    return key is not None and any(_identity(p) == key for p in _lineage(path))


def _swappable_parent(path: str) -> str | None:
    """The first directory above ``path`` in which a user other than vigil's (or root) could
    rename an entry on the path: owned by another user, or writable by others without the
    sticky bit (in a sticky one, the next entry must be vigil's or root's). A directory
    writable by its group is left alone: with per-user groups that is the user alone."""
    me = os.geteuid()
    child = path
    for parent in _lineage(path)[1:]:
        try:
            st = os.stat(parent)
        except OSError:
            child = parent
            continue  # missing: vigil creates it, as its own user
        if st.st_uid not in (0, me):
            return parent
        if st.st_mode & stat.S_IWOTH:
            if not st.st_mode & stat.S_ISVTX:
                return parent
            try:
                owner = os.lstat(child).st_uid
            except OSError:
                owner = me  # not there yet: vigil makes it
            if owner not in (0, me):
                return parent
        child = parent
    return None


def check_caches(
    entries: Sequence[str],
    *,
    home: str | None,
    workspace: Path,
    guarded: Sequence[Guarded],
    programs: tuple[Sequence[str], Sequence[str]] | None = None,
) -> list[str]:
    """The resolved cache directories of ``entries``; VIGIL-CACHE-PATH for one that is not
    absolute, is not a directory, or overlaps a ``guarded`` path, the workspace, the home
    directory, ``/`` or a system tree, is or holds a directory on ``PATH``, or overlaps
    vigil's installation (``programs``: both, by default from :func:`program_dirs`)."""
    found: list[str] = []
    on_path, install = program_dirs() if programs is None else programs
    real_home = os.path.realpath(home) if home and os.path.isabs(home) else None
    for entry in entries:
        expanded = expand(entry, home)
        if not os.path.isabs(expanded):
            raise CachePathRefused(
                f"[workspace] caches entry {entry!r} is not an absolute path",
                "Write it as an absolute path or under ~/, e.g. ~/.cache/pip.",
            )
        real = os.path.realpath(expanded)

        def refuse(why: str, entry: str = entry, real: str = real) -> CachePathRefused:
            shown = f"{entry!r}" + (f" (really {real})" if real != entry else "")
            return CachePathRefused(f"[workspace] caches entry {shown} {why}")

        if os.path.lexists(real) and not os.path.isdir(real):
            raise refuse("exists and is not a directory")
        swappable = _swappable_parent(real)
        if swappable is not None:
            raise refuse(
                f"lies in {swappable}, which another user may change: they could swap the "
                "cache for a link to your keys between vigil's check and the mount"
            )
        tops = [*_HELD_BY_NONE, *([real_home] if real_home else [])]
        for top in tops:
            if _inside(top, real):
                what = "the home directory" if top == real_home else top
                raise refuse(f"is or holds {what}; a cache is one tool's own directory")
        for top in _SYSTEM:
            if _inside(real, top):
                raise refuse(f"lies in the system tree {top}")
        # Missing directories too: a step could create a PATH directory inside its cache.
        for top in on_path:
            if _inside(top, real):
                raise refuse(
                    f"is or holds {top}, a directory on PATH: a step could plant a program "
                    "there that vigil or your shell then runs outside the sandbox"
                )
        for top in install:
            if _inside(top, real) or _inside(real, top):
                raise refuse(
                    f"overlaps {top}, where vigil's own code is installed: a step could "
                    "change the code vigil runs"
                )
        places = [Guarded(workspace, "the workspace"), *guarded]
        for place in places:
            other = os.path.realpath(place.path)
            if _inside(real, other) or _inside(other, real):
                raise refuse(f"overlaps {place.what} ({other})")
        for other in found:
            # A step could swap a directory in the outer cache for a link, and the next
            # sandbox would bind whatever the inner cache's path then leads to.
            if other != real and (_inside(real, other) or _inside(other, real)):
                raise refuse(f"overlaps another cache ({other}); declare only one of them")
        if real not in found:
            found.append(real)
    return found


def git_config_files(
    home: str | None, environ: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """(host file, path inside the sandbox) of each git configuration file of the host user:
    ``~/.gitconfig`` at its own path, ``$XDG_CONFIG_HOME/git/config`` (default
    ``~/.config/git/config``) at ``~/.config/git/config``, where a step's git (which gets
    no ``XDG_CONFIG_HOME``) looks. Only regular files, links resolved."""
    if not home or not os.path.isabs(home) or home == "/":
        return []
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    pairs = [
        (os.path.join(home, ".gitconfig"), os.path.join(home, ".gitconfig")),
        (os.path.join(xdg, "git", "config"), os.path.join(home, ".config", "git", "config")),
    ]
    return [(os.path.realpath(src), dest) for src, dest in pairs if os.path.isfile(src)]


def ensure_cache(path: str, owner: tuple[int, int] | None) -> None:
    """Create the cache directory ``path`` if it is missing; a root-run vigil gives the one
    it creates (never its parents, never one that existed) to the step's ``owner``.
    VIGIL-CACHE-PATH if ``path`` (resolved when it was checked) no longer resolves to
    itself: something turned one of its directories into a link since."""
    if os.path.realpath(path) != path:
        raise CachePathRefused(
            f"the cache directory {path} now leads to {os.path.realpath(path)}",
            "Find out what replaced a directory on its path with a link, and restore it.",
        )
    if os.path.isdir(path):
        return
    try:
        os.makedirs(path, mode=0o700)
    except FileExistsError:
        if not os.path.isdir(path):
            raise CachePathRefused(
                f"[workspace] caches entry {path} exists and is not a directory"
            ) from None
        return
    except OSError as exc:
        raise CachePathRefused(
            f"cannot create the cache directory {path}: {exc.strerror or exc}",
            "Create it yourself, writable by the user steps run as.",
        ) from exc
    if owner is not None:
        os.chown(path, *owner, follow_symlinks=False)


def visible_files(pairs: Sequence[tuple[str, str]], hidden: Hidden) -> list[tuple[str, str]]:
    """``pairs`` without any whose source is, or lies in, something vigil hides."""
    kept = []
    for src, dest in pairs:
        try:
            st = os.stat(src)
        except OSError:
            continue
        if hidden.reason(st) is None and hidden.real_path_reason(src) is None:
            kept.append((src, dest))
    return kept
