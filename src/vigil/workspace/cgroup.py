"""Per-attempt control groups: the kernel's bound on all of an attempt's processes together.

Where the kernel lets vigil create cgroups, each sandboxed attempt gets its own, in
vigil's own cgroup of each hierarchy (``/proc/self/cgroup``): ``pids.max`` is
``[workspace] max_processes`` and the memory limit is ``max_memory`` with no swap on
top, for every process and thread of the attempt together. That takes root for the
cgroup v1 hierarchies (``/sys/fs/cgroup/pids``, ``/sys/fs/cgroup/memory``), or a cgroup v2
subtree vigil may write whose ``cgroup.subtree_control`` enables ``pids`` and ``memory``.
After each command vigil reads the cgroup's event counters; a refused fork or an
out-of-memory kill fails the attempt with ``VIGIL-LIMIT``. Elsewhere the sandbox falls
back to per-process rlimits (:mod:`vigil.workspace.sandbox`) and ``vigil doctor`` says so.

How a command gets in (:class:`Entry`), race-free: bubblewrap reports the pid of the
sandbox's first process on ``--info-fd`` as soon as it exists, and that process waits on
``--block-fd`` before it forks the step; it starts nothing before. vigil moves
bubblewrap's monitor and that process into the cgroup, then lets it go, so the step and
everything it starts are born inside. Moving a pid in after the spawn without the block
would race a fast step's forks; writing from the child between fork and exec
(``preexec_fn``) would cost a full ``fork`` of vigil instead of a ``vfork`` on every
command (about 3 ms of CPU here). Per attempt this costs one ``mkdir`` per hierarchy and
a few writes; per command two pipes, one read and a few writes. No program starts, and
the fallback's ``prlimit`` exec is not needed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vigil.errors import LimitExceeded
from vigil.workspace.errors import SandboxUnavailable

PIDS, MEMORY = "pids", "memory"
CONTROLLERS = (PIDS, MEMORY)
# How long the processes left in an attempt's cgroup get to die after SIGKILL.
KILL_DEADLINE = 10.0

CGROUP_MEANING = (
    "max_processes and max_memory bound all processes of an attempt together (no swap on "
    "top); a hit fails the attempt with VIGIL-LIMIT"
)
RLIMIT_MEANING = (
    "per process: max_processes bounds each command's processes and threads, max_memory "
    "each process's data memory, not their sum; a hit shows as the step's own failure "
    "(fork or malloc fails), not as VIGIL-LIMIT"
)


@dataclass(frozen=True)
class Hierarchy:
    """Where one controller's attempt cgroups are made: vigil's own cgroup in it."""

    controller: str
    version: int
    parent: Path


@dataclass(frozen=True)
class Enforcement:
    """What enforces ``[workspace] max_processes`` and ``max_memory`` on this machine."""

    mechanism: str  # "cgroup v1", "cgroup v2", "cgroup v1+v2" or "rlimits"
    detail: str  # the cgroups used, or why none can be
    hierarchies: tuple[Hierarchy, ...] = ()

    @property
    def cgroups(self) -> bool:
        """Whether per-attempt cgroups enforce the limits."""
        return bool(self.hierarchies)

    @property
    def meaning(self) -> str:
        """What the mechanism bounds, and how a hit shows, in one sentence."""
        return CGROUP_MEANING if self.cgroups else RLIMIT_MEANING


# --- Reading /proc (pure functions of the files' text) -------------------------------


def own_cgroups(text: str) -> dict[str, str]:
    """Controller name to path from ``/proc/self/cgroup``; the v2 hierarchy under ``""``."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        number, controllers, path = parts
        if number == "0" and controllers == "":
            found[""] = path
            continue
        for name in controllers.split(","):
            if name and not name.startswith("name="):
                found[name] = path
    return found


@dataclass(frozen=True)
class Mount:
    """One cgroup filesystem from ``/proc/self/mountinfo``."""

    fstype: str
    root: str
    point: str
    options: frozenset[str]


def cgroup_mounts(text: str) -> list[Mount]:
    """The cgroup and cgroup2 mounts listed in ``/proc/self/mountinfo``."""
    mounts = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        options = frozenset(tail[2].split(","))
        mounts.append(Mount(tail[0], _unescape(fields[3]), _unescape(fields[4]), options))
    return mounts


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code in ("\\040", "\\011", "\\012", "\\134"):
        field = field.replace(code, chr(int(code[1:], 8)))
    return field


def _beneath(mount: Mount, path: str) -> Path | None:
    """The directory of cgroup ``path`` under ``mount``, or None if the mount hides it."""
    root = mount.root.rstrip("/")
    if path != mount.root and not path.startswith(root + "/"):
        return None
    rel = path[len(root) :].lstrip("/")
    return Path(mount.point) / rel if rel else Path(mount.point)


def candidates(own: dict[str, str], mounts: Sequence[Mount]) -> dict[str, Hierarchy]:
    """For each controller, vigil's own cgroup in the hierarchy that carries it: a v1
    mount with that controller, or the v2 mount if the controller is enabled for children
    of vigil's cgroup (read from ``cgroup.subtree_control``)."""
    found: dict[str, Hierarchy] = {}
    for controller in CONTROLLERS:
        for mount in mounts:
            if mount.fstype == "cgroup" and controller in mount.options:
                path = own.get(controller)
                where = None if path is None else _beneath(mount, path)
                if where is not None:
                    found[controller] = Hierarchy(controller, 1, where)
                    break
            elif mount.fstype == "cgroup2" and "" in own:
                where = _beneath(mount, own[""])
                if where is not None and controller in _enabled(where):
                    found[controller] = Hierarchy(controller, 2, where)
                    break
    return found


def _enabled(directory: Path) -> list[str]:
    try:
        return (directory / "cgroup.subtree_control").read_text().split()
    except OSError:
        return []


# --- Deciding once per process ------------------------------------------------------


_DECIDED: list[Enforcement] = []
_DECIDING = threading.Lock()


def enforcement() -> Enforcement:
    """What enforces the limits here: per-attempt cgroups where vigil can create them in
    both the pids and the memory hierarchy (tried for real, once per process), else
    per-process rlimits.

    Decided under a lock: the driver's workers prepare attempts at once, and two probes
    racing (one removing the other's probe cgroup) must not give two answers.
    """
    with _DECIDING:
        if not _DECIDED:
            _DECIDED.append(_decide())
        return _DECIDED[0]


def _decide() -> Enforcement:
    try:
        own = own_cgroups(Path("/proc/self/cgroup").read_text())
        mounts = cgroup_mounts(Path("/proc/self/mountinfo").read_text())
    except OSError as exc:
        return Enforcement("rlimits", f"/proc does not describe cgroups: {exc.strerror}")
    found = candidates(own, mounts)
    missing = [c for c in CONTROLLERS if c not in found]
    if missing:
        return Enforcement(
            "rlimits", f"no cgroup hierarchy vigil can use for {' and '.join(missing)}"
        )
    hierarchies = tuple(found[c] for c in CONTROLLERS)
    for parent in dict.fromkeys(h.parent for h in hierarchies):
        why = _try_create(parent, [h for h in hierarchies if h.parent == parent])
        if why:
            return Enforcement("rlimits", why)
    versions = sorted({h.version for h in hierarchies})
    mechanism = "cgroup " + "+".join(f"v{v}" for v in versions)
    where = ", ".join(f"{h.controller} in {h.parent}" for h in hierarchies)
    return Enforcement(mechanism, f"one cgroup per attempt; {where}", hierarchies)


def _try_create(parent: Path, hierarchies: Sequence[Hierarchy]) -> str:
    """Why an attempt cgroup cannot be made under ``parent`` ("" when it can)."""
    probe = parent / f"vigil-probe-{os.getpid()}"
    with contextlib.suppress(OSError):
        probe.rmdir()
    try:
        probe.mkdir()
    except OSError as exc:
        return f"cannot create a cgroup in {parent}: {exc.strerror}"
    try:
        for h in hierarchies:
            if not (probe / _limit_file(h)).exists():
                return f"the {h.controller} controller has no limit file in {parent}"
        os.close(os.open(probe / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
        # v2 moves a process only for a writer of the common ancestor's cgroup.procs.
        if hierarchies[0].version == 2 and not os.access(parent / "cgroup.procs", os.W_OK):
            return f"cannot move processes out of {parent} (cgroup.procs is not writable)"
        return ""
    except OSError as exc:
        return f"cannot use a cgroup in {parent}: {exc.strerror}"
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


def _limit_file(h: Hierarchy) -> str:
    if h.controller == PIDS:
        return "pids.max"
    return "memory.limit_in_bytes" if h.version == 1 else "memory.max"


# --- One attempt's cgroup ---------------------------------------------------------------


class AttemptCgroup:
    """One attempt's cgroup in each hierarchy: made with its limits, entered by each
    command's sandbox, read after each command, and removed with the attempt."""

    def __init__(
        self,
        enforced: Enforcement,
        name: str,
        *,
        max_processes: int,
        max_memory: int,
        memory_label: str,
    ) -> None:
        self.max_processes = max_processes
        self.max_memory = max_memory
        self.memory_label = memory_label
        self._hierarchies = {h.controller: h for h in enforced.hierarchies}
        self.dirs = {h.controller: h.parent / name for h in enforced.hierarchies}
        self._unique = list(dict.fromkeys(self.dirs.values()))
        self._procs: list[int] = []
        if any(d.exists() for d in self._unique):
            # Left by a vigil killed mid-attempt: what still runs there is its step.
            survivors = _remove(self._unique, {h.version for h in enforced.hierarchies})
            if survivors:
                raise SandboxUnavailable(
                    f"processes {survivors} of an earlier attempt outlived SIGKILL in "
                    f"cgroup {name}",
                    "Wait for them to end (they are stuck in the kernel), then retry.",
                )
        try:
            for directory in self._unique:
                directory.mkdir()
            self._set_limits()
            for directory in self._unique:
                self._procs.append(os.open(directory / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
        except OSError as exc:
            self.close()
            raise SandboxUnavailable(
                f"the attempt's cgroup could not be set up in {exc.filename or name}: "
                f"{exc.strerror or exc}",
                "Run `vigil doctor`; free or raise the cgroup limits of vigil's own cgroup.",
            ) from exc
        self._seen = self._counters()

    def _set_limits(self) -> None:
        pids = self.dirs[PIDS]
        _write(pids / "pids.max", str(self.max_processes) if self.max_processes else "max")
        memory, version = self.dirs[MEMORY], self._hierarchies[MEMORY].version
        if not self.max_memory:
            return
        if version == 1:
            # The plain limit first: the kernel refuses a memsw limit below it.
            _write(memory / "memory.limit_in_bytes", str(self.max_memory))
            if (memory / "memory.memsw.limit_in_bytes").exists():
                _write(memory / "memory.memsw.limit_in_bytes", str(self.max_memory))
        else:
            _write(memory / "memory.max", str(self.max_memory))
            if (memory / "memory.swap.max").exists():
                _write(memory / "memory.swap.max", "0")

    def enter(self, pid: int) -> None:
        """Move process ``pid`` (not its children) into the cgroup."""
        for fd in self._procs:
            os.write(fd, str(pid).encode())

    def entry(self) -> Entry:
        """The way into this cgroup for one command's sandbox."""
        return Entry(self)

    def _counters(self) -> dict[str, int]:
        """Monotonic counts of limit hits. Memory counts out-of-memory events, not the
        times usage touched the limit (v1 ``failcnt``, v2 ``max``): reclaiming page cache
        at the limit is normal work that fails nothing."""
        counts = {PIDS: _fields(self.dirs[PIDS] / "pids.events").get("max", 0)}
        memory = self.dirs[MEMORY]
        if self._hierarchies[MEMORY].version == 1:
            counts[MEMORY] = _fields(memory / "memory.oom_control").get("oom_kill", 0)
        else:
            events = _fields(memory / "memory.events")
            counts[MEMORY] = events.get("oom", 0) + events.get("oom_kill", 0)
        return counts

    def limit_hit(self) -> LimitExceeded | None:
        """VIGIL-LIMIT naming each limit hit since the last call, or None."""
        now = self._counters()
        hit = [c for c in CONTROLLERS if now[c] > self._seen[c]]
        self._seen = now
        if not hit:
            return None
        causes, keys = [], []
        if PIDS in hit:
            causes.append(
                f"the attempt's processes and threads reached [workspace] max_processes = "
                f"{self.max_processes} and the kernel refused to start another"
            )
            keys.append("max_processes")
        if MEMORY in hit:
            causes.append(
                f"the attempt's processes together reached [workspace] max_memory = "
                f"{self.memory_label} and the kernel killed one (out of memory)"
            )
            keys.append("max_memory")
        return LimitExceeded(
            "; ".join(causes),
            f"Make the step use less, or raise [workspace] {' and '.join(keys)} in vigil.toml.",
        )

    def members(self) -> list[int]:
        """Processes in the attempt's cgroup now."""
        return _members(self._unique)

    def close(self) -> list[int]:
        """Kill what is left in the cgroup and remove it; idempotent. Returns the processes
        that survived SIGKILL for :data:`KILL_DEADLINE` seconds (the cgroup then stays)."""
        for fd in self._procs:
            os.close(fd)
        self._procs = []
        return _remove(self._unique, {h.version for h in self._hierarchies.values()})


class Entry:
    """One command's way into the attempt's cgroup, through bubblewrap's ``--info-fd``
    and ``--block-fd`` (see the module docstring). Its descriptors are closed by
    :meth:`started`, or by :meth:`close` if the command was never spawned."""

    def __init__(self, cgroup: AttemptCgroup) -> None:
        self._cgroup = cgroup
        self._info, self._info_child = os.pipe2(os.O_CLOEXEC)
        self._block_child, self._release = os.pipe2(os.O_CLOEXEC)
        self._open = [self._info, self._info_child, self._block_child, self._release]

    @property
    def arguments(self) -> list[str]:
        """The bubblewrap options that report the sandbox's pid and hold its start."""
        return ["--info-fd", str(self._info_child), "--block-fd", str(self._block_child)]

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """The descriptors bubblewrap must inherit."""
        return (self._info_child, self._block_child)

    def started(self, pid: int | None) -> None:
        """Move bubblewrap (``pid``) and the sandbox's first process into the cgroup, then
        let the step start. ``pid`` None: the spawn failed; only the descriptors close.
        If the move fails, both processes are killed (the waiting one first, so it never
        runs outside) and the attempt fails with VIGIL-SANDBOX."""
        for fd in (self._info_child, self._block_child):
            self._close(fd)  # else the read below never sees the end
        if pid is None:
            self.close()
            return
        first: int | None = None
        try:
            first = _first_pid(_read_all(self._info))
            for process in (pid, first):
                if process is not None:
                    with contextlib.suppress(ProcessLookupError):  # ended: nothing to bound
                        self._cgroup.enter(process)
            with contextlib.suppress(BrokenPipeError):
                os.write(self._release, b"1")
        except (OSError, ValueError) as exc:
            for process in (first, pid):
                if process is not None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(process, signal.SIGKILL)
            raise SandboxUnavailable(
                f"the sandbox could not be moved into the attempt's cgroup: {exc}",
                "Run `vigil doctor`; check that vigil may still write its cgroups.",
            ) from exc
        finally:
            self.close()

    @property
    def pending(self) -> bool:
        """Whether descriptors are still open (the command was not spawned yet)."""
        return bool(self._open)

    def close(self) -> None:
        """Close what is still open; idempotent."""
        for fd in list(self._open):
            self._close(fd)

    def _close(self, fd: int) -> None:
        if fd in self._open:
            self._open.remove(fd)
            os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def _first_pid(info: bytes) -> int | None:
    """The ``child-pid`` bubblewrap wrote to ``--info-fd``; None if it wrote nothing (it
    failed before the sandbox existed)."""
    if not info.strip():
        return None
    data = json.loads(info)
    pid = data.get("child-pid") if isinstance(data, dict) else None
    if not isinstance(pid, int):
        raise ValueError(f"bubblewrap reported no pid: {info!r}")
    return pid


def _remove(directories: Sequence[Path], versions: Iterable[int]) -> list[int]:
    """SIGKILL every process in ``directories`` until they are empty, then remove them;
    bounded by :data:`KILL_DEADLINE`. Returns the survivors."""
    deadline = time.monotonic() + KILL_DEADLINE
    killer = 2 in set(versions)
    # The kernel frees a cgroup a moment after its last process is reaped: poll soon at
    # first, then less often (most attempts' cgroups go within a millisecond or two).
    pause = 0.0005
    while True:
        left = _members(directories)
        if not left and _rmdir_all(directories):
            return []
        if time.monotonic() >= deadline:
            return left
        for directory in directories:
            kill_file = directory / "cgroup.kill"
            if killer and kill_file.exists():
                with contextlib.suppress(OSError):
                    _write(kill_file, "1")  # v2: the kernel kills all, racing no fork
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(pause)
        pause = min(pause * 2, 0.01)


def _members(directories: Sequence[Path]) -> list[int]:
    found: set[int] = set()
    for directory in directories:
        try:
            found.update(int(p) for p in (directory / "cgroup.procs").read_text().split())
        except FileNotFoundError:
            continue
    return sorted(found)


def _rmdir_all(directories: Sequence[Path]) -> bool:
    """Remove each directory; False while the kernel still counts it busy."""
    done = True
    for directory in directories:
        try:
            directory.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            done = False
    return done


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _fields(path: Path) -> dict[str, int]:
    """``key value`` lines (``pids.events``, ``memory.events``, ``memory.oom_control``)."""
    fields: dict[str, int] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            fields[key] = int(value)
    return fields
