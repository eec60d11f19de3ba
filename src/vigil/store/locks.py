"""Run locks: at most one process drives a run, and a dead process holds nothing.

Both kinds are released by the operating system or the database the moment the holder
dies, so ``vigil resume`` right after a ``kill -9`` never waits for a lease to expire:

- SQLite: ``flock`` on ``locks/<run id>.lock`` next to the database. The kernel drops the
  lock when the last descriptor closes, which happens as the process exits. The file
  holds the holder's pid, host and start time for the error message; it is never deleted,
  because unlinking a lock file lets two processes lock two different inodes.
- PostgreSQL: a session advisory lock on a connection kept open while locked. The server
  drops it when that session ends, including when the client's socket closes on a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import sqlalchemy as sa

from vigil.errors import RunLocked, StoreError
from vigil.layout import open_private, private_dir

DEAD_HOLDER_GRACE_S: Final = 5.0
"""How long to wait for PostgreSQL to end the session of a holder known to be dead."""

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_HOST_CHARS: Final = 20  # application_name holds at most 63 bytes
_LABEL = re.compile(r"^vigil pid=(\d+) host=(\S*) since=(\d+)$")


@dataclass(frozen=True)
class Holder:
    """Who holds a run lock, as far as can be told."""

    pid: int | None = None
    host: str | None = None
    since: float | None = None
    session: int | None = None  # PostgreSQL backend pid, when the holder is not vigil

    def describe(self) -> str:
        """A phrase for the error message, e.g. ``pid 42 on build-1 since 2025-...Z``."""
        if self.pid is None:
            if self.session is not None:
                return f"PostgreSQL session {self.session}"
            return "another process"
        text = f"pid {self.pid}"
        if self.host:
            text += f" on {self.host}"
        if self.since is not None:
            stamp = datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            text += f" since {stamp}"
        return text

    def is_dead_here(self) -> bool:
        """True if the holder ran on this host and that process no longer exists."""
        if self.pid is None or self.host != _hostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def _hostname() -> str:
    return socket.gethostname()[:_HOST_CHARS]


def _locked(run_id: str, holder: Holder) -> RunLocked:
    return RunLocked(f"run {run_id} is being driven by {holder.describe()}")


def lock_file_name(run_id: str) -> str:
    """A file name for ``run_id``'s lock; ids that are not plain names are hashed."""
    if _SAFE_NAME.match(run_id):
        return f"{run_id}.lock"
    return f"h-{hashlib.sha256(run_id.encode()).hexdigest()[:32]}.lock"


def advisory_key(run_id: str) -> int:
    """The signed 64-bit PostgreSQL advisory lock key of ``run_id``; stable across versions."""
    digest = hashlib.blake2b(f"vigil-run:{run_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class RunLock(ABC):
    """Exclusive right to drive one run; a context manager that releases on exit."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    @property
    @abstractmethod
    def held(self) -> bool:
        """Whether this lock is still held."""

    @abstractmethod
    def release(self) -> None:
        """Give the lock up; calling it again does nothing."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class FileRunLock(RunLock):
    """A run lock held as an ``flock`` on a file (SQLite stores)."""

    def __init__(self, run_id: str, fd: int, path: Path) -> None:
        super().__init__(run_id)
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, lock_dir: Path, run_id: str) -> FileRunLock:
        """Lock ``run_id`` or raise RunLocked naming the holder."""
        path = lock_dir / lock_file_name(run_id)
        try:
            private_dir(lock_dir)
            # O_CLOEXEC: a task's subprocess must not inherit, and so outlive, our lock.
            fd = open_private(path, os.O_RDWR)
        except OSError as exc:
            raise StoreError(f"cannot open lock file {path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise _locked(run_id, holder) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock {path}: {exc.strerror or exc}") from exc
        info = {"pid": os.getpid(), "host": _hostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return cls(run_id, fd, path)

    @property
    def held(self) -> bool:
        """Whether this lock is still held."""
        return self._fd is not None

    def release(self) -> None:
        """Clear the holder record and unlock."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def file_lock_held(lock_dir: Path, run_id: str) -> bool | None:
    """Whether any process holds ``run_id``'s ``flock``, without taking it.

    Taking the lock to test it would make a driver starting at that instant fail with
    VIGIL-RUN-LOCKED, so this reads the kernel's table of locks (``/proc/locks``)
    instead. None when that table cannot be read (not Linux, or no /proc).
    """
    try:
        inode = (lock_dir / lock_file_name(run_id)).stat().st_ino
    except FileNotFoundError:
        return False  # never locked: nobody ever drove the run from this store
    except OSError:
        return None
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in table.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2147131 0 EOF"; waiters carry "->".
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or "->" in fields:
            continue
        if fields[5].rsplit(":", 1)[-1] == str(inode):
            return True
    return False


def advisory_lock_held(conn: sa.Connection, run_id: str) -> bool:
    """Whether any session holds ``run_id``'s advisory lock, without taking it."""
    unsigned = advisory_key(run_id) & 0xFFFFFFFFFFFFFFFF
    params = {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF}
    return conn.execute(_HOLDER_QUERY, params).first() is not None


def _read_holder(fd: int) -> Holder:
    try:
        raw = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return Holder(pid=int(raw["pid"]), host=str(raw["host"]), since=float(raw["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        # The holder may be between truncating and writing its record.
        return Holder()


_HOLDER_QUERY = sa.text(
    "SELECT a.application_name, a.pid FROM pg_locks l"
    " JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND l.classid::bigint = :hi AND l.objid::bigint = :lo"
)


def _pg_holder(conn: sa.Connection, key: int) -> Holder:
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    row = conn.execute(_HOLDER_QUERY, {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF}).first()
    if row is None:
        return Holder()
    match = _LABEL.match(str(row[0] or ""))
    if match is None:
        return Holder(session=int(row[1]))
    return Holder(pid=int(match[1]), host=match[2], since=float(match[3]))


class AdvisoryRunLock(RunLock):
    """A run lock held as a PostgreSQL session advisory lock."""

    def __init__(self, run_id: str, conn: sa.Connection, key: int) -> None:
        super().__init__(run_id)
        self._conn: sa.Connection | None = conn
        self.key = key

    @classmethod
    def acquire(cls, engine: sa.Engine, run_id: str) -> AdvisoryRunLock:
        """Lock ``run_id`` on a dedicated connection or raise RunLocked naming the holder."""
        key = advisory_key(run_id)
        label = f"vigil pid={os.getpid()} host={_hostname()} since={int(time.time())}"
        deadline = time.monotonic() + DEAD_HOLDER_GRACE_S
        conn = engine.connect()
        try:
            # The label is how another process learns who holds the lock.
            conn.execute(sa.select(sa.func.set_config("application_name", label, False)))
            while True:
                got = conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar_one()
                holder = None if got else _pg_holder(conn, key)
                # Commit so the session idles outside a transaction while it holds the lock.
                conn.commit()
                if holder is None:
                    return cls(run_id, conn, key)
                # A holder killed a moment ago still has a session until the server
                # notices the closed socket; that takes milliseconds, so wait for it.
                if not holder.is_dead_here() or time.monotonic() > deadline:
                    raise _locked(run_id, holder)
                time.sleep(0.02)
        except BaseException:
            _discard(conn)
            raise

    @property
    def held(self) -> bool:
        """Whether this lock is still held."""
        return self._conn is not None

    def release(self) -> None:
        """Unlock and close the session, so nothing of it returns to the pool."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            conn.execute(sa.select(sa.func.pg_advisory_unlock(self.key)))
            conn.commit()
        _discard(conn)


def _discard(conn: sa.Connection) -> None:
    # Closing the session releases any advisory lock even if the unlock failed.
    with contextlib.suppress(sa.exc.SQLAlchemyError):
        conn.invalidate()
    with contextlib.suppress(sa.exc.SQLAlchemyError):
        conn.close()
