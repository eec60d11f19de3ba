"""Running one command: its own process group, output to a capped log, a timeout, and a
guarantee that nothing it started outlives it.

Every process vigil starts
- leads a new session/process group, so the whole tree can be signalled at once;
- carries ``VIGIL_PROCESS_TAG`` in its environment, so that processes that escaped the
  group (``setsid``, daemons) can still be found in ``/proc`` and ended;
- dies with vigil: the direct child asks the kernel for SIGKILL when its parent dies
  (``PR_SET_PDEATHSIG``), and ``vigil resume`` ends anything left over by tag.

A sandboxed command's direct child is a *supervisor* (bubblewrap's monitor): it dies with
vigil by itself and reports the step's own exit status, but a SIGTERM would kill it and,
through it, the whole sandbox at once. Stopping such a command signals the step and its
processes first and the supervisor only once the grace period is over.

Every loop that waits for processes to die has a deadline: a process that cannot be
killed (uninterruptible sleep) is reported, never waited on forever.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.layout import open_private, private_dir

TAG_VARIABLE = "VIGIL_PROCESS_TAG"
DEFAULT_GRACE = 5.0
# How long SIGKILLed processes get to disappear before they are reported as survivors.
KILL_DEADLINE = 10.0
DEFAULT_LOG_CAP = 4 * 1024 * 1024

_PR_SET_PDEATHSIG = 1
_LOG = logging.getLogger(__name__)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()
_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None
# Prefix that makes the direct child die with vigil (SIGKILL when its parent goes away).
_DIE_WITH_PARENT: list[str] = [_SETPRIV, "--pdeathsig", "KILL", "--"] if _SETPRIV else []


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@dataclass(frozen=True)
class ProcessOutcome:
    """How a command ended."""

    exit_code: int | None
    timed_out: bool
    stopped: bool
    duration: float

    survivors: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        """Exited 0 on its own."""
        return self.exit_code == 0 and not self.timed_out and not self.stopped


class LogSink:
    """Appends a command's output to a file as it arrives, up to a cap.

    Past the cap the head stays on disk and only the newest ``cap // 4`` bytes are kept in
    memory, written with a marker when the sink closes, so a runaway task cannot fill the
    disk and the end of its output (usually the error) is never lost.
    """

    def __init__(
        self,
        path: Path,
        *,
        cap: int | None = None,
        transform: Callable[[bytes], bytes] | None = None,
        flush_transform: Callable[[], bytes] | None = None,
    ) -> None:
        private_dir(path.parent)
        self.path = path
        self._fh = os.fdopen(open_private(path, os.O_WRONLY | os.O_APPEND), "ab", buffering=0)
        self._cap = cap or int(os.environ.get("VIGIL_LOG_MAX_BYTES") or DEFAULT_LOG_CAP)
        self._written = path.stat().st_size
        self._tail = bytearray()
        self._omitted = 0
        self._transform = transform
        self._flush_transform = flush_transform
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        """Record ``data`` (after redaction, when a transform is set)."""
        if self._transform is not None:
            data = self._transform(data)
        with self._lock:
            self._write_locked(data)

    def _write_locked(self, data: bytes) -> None:
        room = self._cap - self._written
        if room > 0:
            head = data[:room]
            self._fh.write(head)
            self._written += len(head)
            data = data[room:]
        if data:
            self._tail += data
            keep = self._cap // 4
            if len(self._tail) > keep:
                self._omitted += len(self._tail) - keep
                del self._tail[: len(self._tail) - keep]

    def position(self) -> int:
        """How many bytes are on disk so far (to read one command's output back)."""
        return self._written

    def read_since(self, start: int, *, limit: int) -> str:
        """What was written after ``start``: the head and tail of it, at most ``limit``."""
        with self._lock:
            with self.path.open("rb") as fh:
                fh.seek(start)
                data = fh.read()
            data += bytes(self._tail)
        if len(data) > limit:
            data = data[: limit // 3] + b"\n...\n" + data[-(limit - limit // 3) :]
        return data.decode("utf-8", errors="replace")

    def idle(self) -> None:
        """The command has been quiet for a while. Nothing is released: what redaction
        holds back is the possible start of a secret, and only more output or the end of
        the stream (``close``) may release it, never time."""

    def note(self, text: str) -> None:
        """Add a line from vigil itself (not the command) to the log."""
        self.write(f"[vigil] {text}\n".encode())

    def close(self) -> None:
        """Flush what is held back and close the file."""
        with self._lock:
            if self._flush_transform is not None:
                self._write_locked(self._flush_transform())
            if self._omitted or self._tail:
                if self._omitted:
                    self._fh.write(f"\n[vigil] ... {self._omitted} bytes omitted ...\n".encode())
                self._fh.write(bytes(self._tail))
                self._tail.clear()
            self._fh.close()


def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str],
    sink: LogSink,
    timeout: float | None,
    stop: threading.Event,
    tag: str,
    grace: float = DEFAULT_GRACE,
    on_spawn: Callable[[int], None] | None = None,
    stdin: bytes | None = None,
    supervisor: bool = False,
    pass_fds: tuple[int, ...] = (),
    started: Callable[[int | None], None] | None = None,
) -> ProcessOutcome:
    """Run ``argv`` to completion, its timeout, or ``stop``; whichever comes first.

    Output (stdout and stderr, interleaved) goes to ``sink``. However the command ends,
    its whole process group and every process carrying ``tag`` are gone on return, or
    listed in the outcome's ``survivors`` (and the log) if they could not be killed.
    ``supervisor``: ``argv[0]`` dies with its parent by itself and must outlive the
    step while it is being stopped (see the module docstring). ``pass_fds`` and
    ``started`` come from a sandbox: descriptors the child inherits, and a call with its
    pid right after the spawn (None if it failed), before the step may start.
    """
    began = time.monotonic()
    full_env = dict(env)
    full_env[TAG_VARIABLE] = tag
    source: Any = subprocess.DEVNULL
    if stdin is not None:
        # A file, not a pipe: no writer thread, no deadlock on a child that reads late.
        source = tempfile.TemporaryFile()  # noqa: SIM115 - closed below, after the spawn
        source.write(stdin)
        source.seek(0)
    try:
        proc = subprocess.Popen(
            list(argv) if supervisor else [*_DIE_WITH_PARENT, *argv],
            stdin=source,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            pass_fds=pass_fds,
            start_new_session=True,
            # Without setpriv, ask for the parent-death signal between fork and exec; this
            # costs a full fork instead of vfork, so it is only the fallback.
            preexec_fn=None
            if supervisor or _DIE_WITH_PARENT or _LIBC is None
            else _die_with_parent,
        )
    except OSError as exc:
        if started is not None:
            started(None)
        sink.note(f"could not start {argv[0]!r}: {exc.strerror or exc}")
        return ProcessOutcome(127, False, False, time.monotonic() - began)
    finally:
        if stdin is not None:
            source.close()
    if started is not None:
        try:
            started(proc.pid)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            assert proc.stdout is not None
            proc.stdout.close()
            _wait(proc)
            raise
    if on_spawn is not None:
        on_spawn(proc.pid)
    assert proc.stdout is not None
    timed_out, stopped = _pump(proc, sink, stop, began, timeout)
    survivors: list[int] = []
    if timed_out or stopped:
        survivors = end_tree(proc.pid, tag, grace=grace, spare=proc.pid if supervisor else None)
    else:
        _wait(proc)
        if _group_exists(proc.pid):
            # The command is done; whatever it left running in its group must not outlive it.
            survivors = end_tree(proc.pid, None, grace=0.0)
    if survivors:
        sink.note(f"could not kill process(es) {', '.join(map(str, survivors))}; they survive")
    _drain(proc.stdout.fileno(), sink)
    proc.stdout.close()
    code = _wait(proc)
    return ProcessOutcome(
        None if (timed_out or stopped) else code,
        timed_out,
        stopped,
        time.monotonic() - began,
        tuple(survivors),
    )


def _wait(proc: subprocess.Popen[bytes]) -> int | None:
    """The command's exit status; None if even SIGKILL did not end it within the deadline."""
    try:
        return proc.wait(timeout=KILL_DEADLINE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            proc.kill()
        try:
            return proc.wait(timeout=KILL_DEADLINE)
        except subprocess.TimeoutExpired:
            return None


def _pump(
    proc: subprocess.Popen[bytes],
    sink: LogSink,
    stop: threading.Event,
    started: float,
    timeout: float | None,
) -> tuple[bool, bool]:
    """Copy output to ``sink`` until the command exits, times out or is stopped.

    Waits on the pipe and, where the kernel has them, on a pidfd of the child, so an exit
    is noticed at once without polling. Returns (timed_out, stopped).
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = None if timeout is None else started + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    pidfd = _pidfd(proc.pid)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    pipe_open = True
    try:
        while True:
            wait_ms = 200 if pidfd is not None or not pipe_open else 50
            if deadline is not None:
                wait_ms = max(0, min(wait_ms, int((deadline - time.monotonic()) * 1000) + 1))
            events = poller.poll(wait_ms)
            if not events:
                sink.idle()
            for ready, _ in events:
                if ready == fd:
                    chunk = os.read(fd, 65536)
                    if chunk:
                        sink.write(chunk)
                    else:
                        pipe_open = False
                        poller.unregister(fd)
            exited = proc.poll() is not None
            if exited and not pipe_open:
                return False, False
            if exited and not _readable(fd):
                # It exited; something it left behind holds the pipe open. The caller
                # ends the group; the pipe is drained then.
                return False, False
            if stop.is_set():
                return False, True
            if deadline is not None and time.monotonic() >= deadline:
                sink.note(f"timed out after {timeout:g}s; stopping the process tree")
                return True, False
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _pidfd(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _drain(fd: int, sink: LogSink) -> None:
    while select.select([fd], [], [], 0.05)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        sink.write(chunk)


def end_tree(
    pgid: int,
    tag: str | None,
    *,
    grace: float = DEFAULT_GRACE,
    spare: int | None = None,
    deadline: float = KILL_DEADLINE,
) -> list[int]:
    """End process group ``pgid`` and every process tagged ``tag``: SIGTERM, then SIGKILL.

    ``spare`` (a supervisor) gets no SIGTERM: it ends when the step does, or is killed
    with the rest once ``grace`` is over. Returns the processes still alive ``deadline``
    seconds after SIGKILL (empty when everything ended).
    """
    targets = _alive(pgid, tag)
    if not targets:
        return []
    if grace > 0:
        if spare is None:
            _signal_all(pgid, targets, signal.SIGTERM)
        else:
            for pid in targets:
                if pid != spare:
                    _kill(pid, signal.SIGTERM)
        limit = time.monotonic() + grace
        while time.monotonic() < limit and _alive(pgid, tag):
            time.sleep(0.02)
    return _kill_until(lambda: _alive(pgid, tag), lambda pids: _signal_all(pgid, pids), deadline)


def _kill_until(
    alive: Callable[[], list[int]], kill: Callable[[list[int]], None], deadline: float
) -> list[int]:
    """SIGKILL what ``alive`` finds until nothing is left or ``deadline`` seconds pass."""
    limit = time.monotonic() + deadline
    while True:
        remaining = alive()
        if not remaining or time.monotonic() >= limit:
            return remaining
        kill(remaining)
        time.sleep(0.01)


def end_tagged(
    tag_prefix: str, *, grace: float = DEFAULT_GRACE, deadline: float = KILL_DEADLINE
) -> list[int]:
    """End every process whose tag starts with ``tag_prefix`` (used when resuming).

    Returns the processes found; those still alive after the deadline are logged.
    """
    found = tagged_processes(tag_prefix)
    if not found:
        return []
    for pid in found:
        _kill(pid, signal.SIGTERM)
    limit = time.monotonic() + grace
    while time.monotonic() < limit and tagged_processes(tag_prefix):
        time.sleep(0.02)

    def kill(pids: list[int]) -> None:
        for pid in pids:
            _kill(pid, signal.SIGKILL)

    survivors = _kill_until(lambda: tagged_processes(tag_prefix), kill, deadline)
    if survivors:
        _LOG.warning(
            "processes %s (tag %s) survived SIGKILL for %gs",
            ", ".join(map(str, survivors)),
            tag_prefix,
            deadline,
        )
    return found


def tagged_processes(tag_prefix: str) -> list[int]:
    """Pids of live processes whose ``VIGIL_PROCESS_TAG`` starts with ``tag_prefix``."""
    return _scan(None, tag_prefix)


def _alive(pgid: int, tag: str | None) -> list[int]:
    """Live (non-zombie) processes in group ``pgid`` or carrying exactly ``tag``."""
    return _scan(pgid, tag, exact=True)


def _scan(pgid: int | None, tag_prefix: str | None, *, exact: bool = False) -> list[int]:
    """Live (non-zombie) processes in group ``pgid`` or whose tag starts with the prefix."""
    needle = f"{TAG_VARIABLE}={tag_prefix}".encode() if tag_prefix else None
    found: list[int] = []
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[-1].split()
        except OSError:
            continue
        if fields[0] in (b"Z", b"X"):
            continue
        if pgid is not None and int(fields[2]) == pgid:
            found.append(int(entry))
            continue
        if needle is None:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:
            continue
        items = environ.split(b"\0")
        if (needle in items) if exact else any(i.startswith(needle) for i in items):
            found.append(int(entry))
    return found


def _signal_all(pgid: int, targets: list[int], sig: signal.Signals = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for pid in targets:
        _kill(pid, sig)


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
