"""A bound on the disk a running attempt fills, kept while its step runs.

The changeset limits (:mod:`vigil.workspace.limits`) are checked exactly at capture,
after the step has exited. By then it could have filled the disk: everything a step
writes into the workspace lands in its attempt's upper directory, on the filesystem that
holds vigil's state (and the audit log, and every other run's). So while the step runs,
one thread per attempt (:class:`DiskWatch`) stops it with ``VIGIL-LIMIT`` as soon as

- what it changed so far holds more than ``max_changeset_bytes`` (apparent sizes, as at
  capture), more than ``max_changeset_files`` paths, or a path longer than vigil handles
  (overlay mode: its upper directory; snapshot mode: the workspace against its
  before-scan, the same count capture makes first);
- or the filesystem it writes to has less than ``min_free_disk`` free (overlay mode: the
  state directory's; snapshot mode: the workspace's).

Cost. ``statvfs`` is one system call; it runs every :data:`POLL` seconds. Measuring is a
walk (``lstat`` only, nothing is read: over what the step wrote in overlay mode, over the
workspace in snapshot mode), so it runs only when it can matter: when the filesystem's
used space grew since the last walk by half of what is left under the limit (what a step
writes shows there at once, delayed allocation included), and otherwise every
:data:`REWALK` seconds, which catches what that figure hides (a sparse file, another
process freeing space meanwhile). Walks are spaced by at least twice the last walk's
duration (ten times for the periodic one) and stop at the first path over a limit, so a
big tree costs a bounded share of one core, not a walk per poll.

Slack. No write is refused at the limit; the watchdog sees it at its next check. A step
therefore gets past ``max_changeset_bytes`` by what it writes in about one poll and one
walk (a few megabytes on a local disk; more on fast storage or a loaded machine) before
it is stopped, and the capture that would follow refuses the changeset exactly.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from vigil.errors import LimitExceeded
from vigil.workspace.beneath import Blocked, Tree
from vigil.workspace.limits import Limits, Tally

POLL = 0.05
REWALK = 1.0
_LOG = logging.getLogger(__name__)


def measure(upper: Path, tally: Tally) -> bool:
    """Count every path and byte under ``upper`` into ``tally``, which raises
    ``VIGIL-LIMIT`` at the first excess; False if a directory could not be read.

    Depth first without recursion, one directory open at a time, never following a
    link (like :func:`vigil.workspace.state.walk`), and tolerant of a tree that changes
    while it is walked.
    """
    complete = True
    with Tree(upper) as tree:
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            try:
                fd = tree.open_dir(rel_dir.split("/") if rel_dir else [])
            except (FileNotFoundError, Blocked):
                continue  # gone, or no longer a directory
            except OSError:
                complete = False  # no search permission (a step's chmod, without root)
                continue
            try:
                real = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                complete = False  # no read permission
                continue
            finally:
                os.close(fd)
            try:
                with os.scandir(real) as entries:
                    for entry in entries:
                        rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                        tally.path(rel)
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        except OSError:
                            complete = False
                            continue
                        if stat.S_ISDIR(st.st_mode):
                            stack.append(rel)
                        elif stat.S_ISREG(st.st_mode):
                            tally.content(rel, st.st_size)
            finally:
                os.close(real)
    return complete


class DiskWatch:
    """Watches one running attempt's disk use; sets ``halt`` when it goes over a limit.

    Use it as a context manager around the step's commands: the thread starts on entry
    and is stopped and joined on exit (or by :meth:`close`). :attr:`exceeded` then says
    why the attempt was stopped, if it was.
    """

    def __init__(
        self,
        limits: Limits,
        *,
        disk: Path,
        count: Callable[[Tally], bool] | None,
        halt: threading.Event,
    ) -> None:
        self.limits = limits
        self.disk = disk
        # Counts what the step changed so far into a tally (False: not all of it could
        # be read); None: only the free space is watched.
        self.count = count
        self.halt = halt
        self.exceeded: LimitExceeded | None = None
        # The most bytes one measurement of the upper directory counted (for tests, logs).
        self.peak = 0
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._at_start = self._used_then = 0
        self._walked_at = float("-inf")
        self._cost = 0.0
        self._measured = 0

    def __enter__(self) -> DiskWatch:
        if self.count is None and not self.limits.min_free:
            return self  # nothing to watch
        self._at_start = self._used_then = self._used()
        self._thread = threading.Thread(target=self._watch, name="vigil-diskwatch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching and wait for the thread (idempotent)."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _watch(self) -> None:
        try:
            while not self._done.wait(POLL):
                problem = self.check()
                if problem is not None:
                    self.exceeded = problem
                    self.halt.set()
                    return
        except Exception:  # a watchdog that fails must not take the attempt with it
            _LOG.warning("the disk watchdog of %s stopped", self.disk, exc_info=True)

    def _used(self) -> int:
        vfs = os.statvfs(self.disk)
        return (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize

    def check(self) -> LimitExceeded | None:
        """One round: the free space, then the upper directory if it is due."""
        vfs = os.statvfs(self.disk)
        free = vfs.f_bavail * vfs.f_frsize
        if self.limits.min_free and free < self.limits.min_free:
            return LimitExceeded(
                f"the disk holding {self.disk} has {free} bytes free, less than "
                f"[workspace] min_free_disk ({self.limits.min_free} bytes); the step was "
                "stopped",
                "Free space on that disk, make the step write less, or lower "
                "[workspace] min_free_disk in vigil.toml (0 turns the check off).",
            )
        if self.count is None:
            return None
        used = (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
        now = time.monotonic()
        since = now - self._walked_at
        headroom = max(self.limits.max_bytes - self._measured, 0)
        grew = 2 * (used - self._used_then) >= headroom and since >= 2 * self._cost
        if not grew and since < max(REWALK, 10 * self._cost):
            return None
        tally = self.limits.tally()
        try:
            complete = self.count(tally)
        except OSError:
            complete = False  # e.g. a directory the step made unreadable
        except LimitExceeded as exc:
            self.peak = max(self.peak, tally.bytes)
            return LimitExceeded(
                f"while the step ran: {exc.cause}; the step was stopped", exc.remedy
            )
        finally:
            self._cost = time.monotonic() - now
            self._walked_at, self._used_then = now, used
        self._measured = tally.bytes
        if not complete:
            # Some directory hides its size: count the disk's growth since the start.
            self._measured = max(tally.bytes, used - self._at_start)
        self.peak = max(self.peak, self._measured)
        if self._measured > self.limits.max_bytes:
            return LimitExceeded(
                f"while the step ran: the disk it writes to grew by {self._measured} bytes, "
                f"more than max_changeset_bytes ({self.limits.max_bytes}), and part of "
                "what it wrote cannot be read; the step was stopped",
                "Make the step write less into the workspace, or raise "
                "[workspace] max_changeset_bytes in vigil.toml.",
            )
        return None
