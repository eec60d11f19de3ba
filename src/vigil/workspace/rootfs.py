"""The step's root filesystem, built from an allowlist, as bubblewrap arguments.

Nothing of the host is visible unless listed here: the system's programs and libraries
(``/usr``, ``/bin``, ``/sbin``, ``/lib*``) and ``/etc`` read-only with password hashes and
sudoers masked, ``/opt``, this Python and the directories on ``PATH`` that live elsewhere,
declared extra read-only paths, declared caches read-write (see
:mod:`vigil.workspace.homefiles`), the host's git configuration read-only in the private
home, and the workspace as a copy-on-write overlay at its real path. ``/tmp``,
``/dev/shm``, ``/run`` (so ``/var/run``), ``/var/tmp`` and ``HOME`` are empty private
tmpfs; ``/proc`` and ``/dev`` are fresh.

Host Unix sockets: the system directories are bind mounts (a socket there would be
reachable; none lives there on a normal system). Every other host directory is mounted
as an overlay, through which ``connect()`` to a socket file fails (the overlay inode is
not the socket's), so a socket in the workspace or a tool directory is dead inside the
box. Declared read-only paths are live binds (a step sees later changes) with every
socket found in them masked; past 10,000 entries they are overlays too. Abstract
sockets belong to the network namespace.

Hidden paths (vigil's state, the user's keys and grants) are never bound; where one lies
inside something that is (a tool directory bound from an ancestor, the workspace), it is
covered by an empty read-only tmpfs or ``/dev/null`` right after that mount and before
anything mounted inside it: operations are sorted by depth, masks after the mounts at
the same path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Host files no step needs and that hold secrets; masked even though the step's uid
# (never root) cannot read most of them anyway.
MASKED_ETC = (
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/security/opasswd",
    "/etc/ssl/private",
    "/etc/ssh",
)
# Credentials tools keep inside their own tree (``~/.cargo`` holds cargo's registry
# token): a tool directory is bound for its programs, never for these.
TOOL_CREDENTIALS = (
    "credentials",
    "credentials.toml",
    ".credentials",
    ".netrc",
    ".pypirc",
    ".npmrc",
    ".git-credentials",
)
# Trees that are never bound, whatever a PATH entry says.
_NEVER = ("/", "/proc", "/sys", "/dev", "/run", "/var/run", "/tmp", "/home", "/root", "/var")
_COVERED = (*SYSTEM_DIRS, "/etc", "/opt", "/proc", "/dev", "/sys")


def under(path: str, base: str) -> bool:
    """Whether ``path`` is ``base`` or inside it (both absolute, normalised)."""
    return path == base or path.startswith(base.rstrip("/") + "/")


def tool_dirs(*inside_only: str, hidden: Sequence[str] = ()) -> list[str]:
    """Directories that hold this Python, its packages or programs on ``PATH`` and that the
    system directories do not cover. Paths inside or around ``inside_only`` (the
    workspace, the attempt's directory) and inside a hidden path are left out; nested
    ones are merged."""
    paths = list(sys.path)
    if paths and paths[0] in ("", os.getcwd()):
        paths.pop(0)  # `python -m`/`-c` put the current directory there: no tool lives in it
    wanted = [sys.prefix, sys.base_prefix, os.path.dirname(sys.executable), *paths]
    wanted += os.environ.get("PATH", "").split(os.pathsep)
    wanted += os.environ.get("PYTHONPATH", "").split(os.pathsep)
    found: set[str] = set()
    home = os.path.realpath(os.path.expanduser("~"))
    for raw in wanted:
        if not raw or not os.path.isabs(raw):
            continue
        real = os.path.realpath(raw)
        if real in _NEVER or not os.path.isdir(real):
            continue
        if any(under(real, c) for c in _COVERED):
            continue
        if home not in ("/", "") and under(real, home) and real != home:
            real = _tool_tree(real, home)
        if any(under(real, s) for s in (*inside_only, *hidden)):
            continue
        if any(under(s, real) for s in inside_only):
            continue  # never the surroundings of the workspace: the overlay shows it
        if home not in ("/", "") and under(home, real):
            continue  # never the whole home directory, or an ancestor of it
        found.add(real)
    kept: list[str] = []
    for path in sorted(found, key=len):
        if not any(under(path, k) for k in kept):
            kept.append(path)
    return kept


def _tool_tree(path: str, home: str) -> str:
    """The tree a tool in the home directory needs, and no more of the home directory.

    A virtual environment needs its root (``pyvenv.cfg`` marks it); a tool home such as
    ``~/.pyenv``, ``~/.local`` or ``~/.cargo`` (a hidden top directory) needs all of it;
    anything else (a project's ``bin``, a checkout on ``PATH``) gets the prefix a ``bin``
    directory belongs to, or the directory itself: never the project around it, whose
    other files (``.env``, credentials, other checkouts) are no tool's business.
    """
    probe = path
    while under(probe, home) and probe != home:
        if os.path.isfile(os.path.join(probe, "pyvenv.cfg")):
            return probe
        probe = os.path.dirname(probe)
    top = os.path.relpath(path, home).split(os.sep)[0]
    if top.startswith("."):
        return os.path.join(home, top)
    if os.path.basename(path) == "bin" and os.path.dirname(path) != home:
        return os.path.dirname(path)
    return path


_SCAN_LIMIT = 10000


def _sockets_in(top: str) -> list[str] | None:
    """Unix socket files under ``top``; None if it holds more than ``_SCAN_LIMIT`` entries."""
    import stat

    found: list[str] = []
    seen = 0
    for parent, dirs, files in os.walk(top):
        seen += len(dirs) + len(files)
        if seen > _SCAN_LIMIT:
            return None
        for name in files:
            path = os.path.join(parent, name)
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    found.append(path)
            except OSError:
                continue
    return found


@dataclass
class RootPlan:
    """What goes into one sandbox's root. Host paths are passed through ``source`` (the
    staging of a root-run vigil) before bubblewrap reads them."""

    workspace: str
    lower: str
    upper: str
    work: str
    empty: str
    hidden: Sequence[str] = ()
    protected: Sequence[str] = ()
    network: bool = False
    tools: Sequence[str] = ()
    read_only: Sequence[str] = ()
    caches: Sequence[str] = ()
    """Host directories shown read-write at their own path (checked beforehand)."""
    home_files: Sequence[tuple[str, str]] = ()
    """Host files (source, destination) shown read-only in the private home."""
    home: str | None = None
    tmp_size: int = 0
    source: Callable[[str], str] = field(default=lambda p: p)
    outputs: str | None = None
    """A directory bound writable at ``/run/vigil``: the step's ``$VIGIL_OUTPUT`` is in it."""

    def arguments(self) -> list[str]:
        """bubblewrap's mount arguments, in an order that keeps hidden paths hidden."""
        ops: list[tuple[str, int, list[str]]] = []
        exposed: list[str] = []  # host trees visible inside; hidden paths under them are masked

        def add(dest: str, rank: int, args: list[str], *, shows_host: bool = False) -> None:
            ops.append((dest, rank, args))
            if shows_host:
                exposed.append(dest)

        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                add(path, 0, ["--symlink", os.readlink(path), path])
            elif os.path.isdir(path):
                add(path, 1, ["--ro-bind", path, path], shows_host=True)
        add("/etc", 1, ["--ro-bind", "/etc", "/etc"], shows_host=True)
        for path in MASKED_ETC:
            if os.path.lexists(path):
                add(path, 2, self._mask(path))
        if self.network:
            resolv = os.path.realpath("/etc/resolv.conf")
            if os.path.isfile(resolv) and not any(under(resolv, c) for c in _COVERED):
                add(resolv, 1, ["--ro-bind", self.source(resolv), resolv])
        if os.path.isdir("/opt"):
            add("/opt", 1, self._read_only("/opt"), shows_host=True)
        add("/proc", 0, ["--proc", "/proc"])
        add("/dev", 0, ["--dev", "/dev"])
        for path in ("/tmp", "/dev/shm", "/run", "/var/tmp"):
            add(path, 0, [*self._size(), "--tmpfs", path])
        add("/var/run", 0, ["--symlink", "/run", "/var/run"])
        if self.outputs is not None:
            add("/run/vigil", 1, ["--bind", self.outputs, "/run/vigil"])
        home = self.home
        if (
            home
            and os.path.isabs(home)
            and home != "/"
            and not any(under(home, c) for c in (*_COVERED, "/run", "/var/run"))
        ):
            add(home, 0, [*self._size(), "--tmpfs", home])
            for src, dest in self.home_files:
                if under(dest, home) and not any(under(src, h) for h in self.hidden):
                    add(dest, 1, ["--ro-bind", self.source(src), dest])
        for path in self.tools:
            add(path, 1, self._read_only(path), shows_host=True)
            for name in TOOL_CREDENTIALS:
                secret = os.path.join(path, name)
                if os.path.lexists(secret):
                    add(secret, 2, self._mask(secret))
        for path in self.read_only:
            if any(under(path, h) for h in self.hidden):
                continue
            sockets = _sockets_in(path)
            if sockets is None:  # too big to scan each time: an overlay (a static view)
                add(path, 1, self._read_only(path), shows_host=True)
                continue
            # A declared path is shown live (a bind), so its sockets are masked one by one.
            add(path, 1, ["--ro-bind", self.source(path), path], shows_host=True)
            for sock in sockets:
                add(sock, 2, ["--ro-bind", "/dev/null", sock])
        for path in self.caches:
            add(path, 1, ["--bind", self.source(path), path], shows_host=True)
        ws = self.workspace
        add(
            ws,
            1,
            ["--overlay-src", self.lower, "--overlay", self.upper, self.work, ws],
            shows_host=True,
        )
        for path in self.hidden:
            if any(under(path, e) for e in exposed) and os.path.lexists(path):
                add(path, 2, self._mask(path))
        for path in self.protected:
            add(path, 3, ["--ro-bind", os.path.join(self.lower, os.path.relpath(path, ws)), path])
        ops.sort(key=lambda op: (op[0].rstrip("/").count("/"), op[1]))
        args = [a for _, _, op_args in ops for a in op_args]
        # A masking tmpfs stays writable until every mount inside it exists; then read-only.
        for dest, rank, op_args in ops:
            if rank == 2 and "--tmpfs" in op_args:
                args += ["--remount-ro", dest]
        # bubblewrap's root is a tmpfs: read-only too, or a step could fill memory with it.
        return [*args, "--remount-ro", "/"]

    def _size(self) -> list[str]:
        return ["--size", str(self.tmp_size)] if self.tmp_size > 0 else []

    def _mask(self, path: str) -> list[str]:
        if os.path.isdir(path) and not os.path.islink(path):
            return ["--size", "4096", "--tmpfs", path]
        return ["--ro-bind", "/dev/null", path]

    def _read_only(self, path: str) -> list[str]:
        # An overlay, not a bind: a host socket in there cannot be connected to.
        src = self.source(path)
        return ["--overlay-src", src, "--overlay-src", self.empty, "--ro-overlay", path]
