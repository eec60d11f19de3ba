"""Opening the database behind a store, and turning driver failures into StoreError.

SQLite runs in WAL mode with ``synchronous=FULL`` unless ``VIGIL_SQLITE_SYNCHRONOUS=NORMAL``
relaxes it: NORMAL still survives ``kill -9`` of any process, but a power cut or kernel
crash may lose the last transactions. Write transactions start with ``BEGIN IMMEDIATE`` so
two processes appending at once queue on the busy timeout instead of failing on a lock
upgrade.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy import event

from vigil.errors import (
    ConfigError,
    StoreDamaged,
    StoreError,
    StoreMisconfigured,
    StoreRefused,
)
from vigil.layout import PRIVATE_FILE, private_dir

SQLITE_BUSY_TIMEOUT_S: Final = 30.0
PG_CONNECT_TIMEOUT_S: Final = 10
SQLITE_SYNC_MODES: Final = ("FULL", "NORMAL", "EXTRA")
WRITE_OPTION: Final = "vigil_write"
"""Execution option marking a connection whose transactions take SQLite's write lock."""

DAMAGED_REMEDY: Final = (
    "Move the damaged file aside (with its -wal and -shm files) or restore it from a "
    "backup, then run again; vigil creates a fresh store."
)

Backend = Literal["sqlite", "postgresql"]


@dataclass(frozen=True)
class Target:
    """A parsed store URL: which backend, and for SQLite which file."""

    url: sa.URL
    backend: Backend
    sqlite_path: Path | None

    @property
    def display(self) -> str:
        """The URL with any password hidden, for messages."""
        return self.url.render_as_string(hide_password=True)

    @property
    def lock_dir(self) -> Path | None:
        """Where SQLite run locks live: ``locks/`` next to the database file."""
        return None if self.sqlite_path is None else self.sqlite_path.parent / "locks"


def parse_target(url: str) -> Target:
    """Check that ``url`` names a SQLite file or a PostgreSQL database."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreMisconfigured(
            f"{url!r} is not a database URL",
            "Use sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB.",
            failure="unsupported-url",
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            raise StoreMisconfigured(
                f"{parsed.render_as_string(hide_password=True)} is an in-memory database",
                "Point the store at a file (sqlite:///PATH) so runs survive the process.",
                failure="unsupported-url",
            )
        return Target(parsed, "sqlite", Path(database).expanduser().absolute())
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            # psycopg 3 is the driver we ship; plain postgresql:// would ask for psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg")
        elif parsed.drivername != "postgresql+psycopg":
            raise StoreMisconfigured(
                f"driver {parsed.drivername!r} is not supported",
                "Use postgresql+psycopg://USER@HOST:PORT/DB.",
                failure="unsupported-url",
            )
        return Target(parsed, "postgresql", None)
    raise StoreMisconfigured(
        f"database {backend!r} is not supported by the run store",
        "Use SQLite (sqlite:///PATH) or PostgreSQL (postgresql+psycopg://...).",
        failure="unsupported-url",
    )


def sqlite_synchronous_from_env() -> str:
    """``VIGIL_SQLITE_SYNCHRONOUS`` checked, defaulting to FULL."""
    raw = os.environ.get("VIGIL_SQLITE_SYNCHRONOUS", "FULL").strip().upper()
    if raw not in SQLITE_SYNC_MODES:
        raise ConfigError(
            f"VIGIL_SQLITE_SYNCHRONOUS={raw!r} is not one of {', '.join(SQLITE_SYNC_MODES)}",
            "Unset it (FULL, the safe default) or set it to NORMAL.",
        )
    return raw


def create_engine(target: Target, *, sqlite_synchronous: str = "FULL") -> sa.Engine:
    """An engine for ``target``; for SQLite, creates the directory and sets pragmas."""
    if target.backend == "postgresql":
        return sa.create_engine(target.url, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S})
    if sqlite_synchronous not in SQLITE_SYNC_MODES:
        raise ValueError(f"unknown synchronous mode {sqlite_synchronous!r}")
    assert target.sqlite_path is not None
    try:
        # Private whatever the umask: the journal holds what steps printed and changed.
        # A new database file is made 0600 here; SQLite gives its -wal and -shm files
        # the database file's own mode.
        private_dir(target.sqlite_path.parent)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        # Something already there (a directory, say) is SQLite's to report.
        with contextlib.suppress(FileExistsError, IsADirectoryError):
            os.close(os.open(target.sqlite_path, flags, PRIVATE_FILE))
    except OSError as exc:
        raise StoreMisconfigured(
            f"cannot create {target.sqlite_path.parent}: {exc.strerror or exc}",
            "Choose a writable --workspace or set VIGIL_DATABASE_URL to a writable path.",
            failure="permission",
        ) from exc
    engine = sa.create_engine(
        target.url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module; _on_begin issues BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def _sqlite_name(exc: BaseException) -> str:
    """SQLite's own error name (``SQLITE_CORRUPT``, ...), empty when there is none."""
    orig = getattr(exc, "orig", None) or exc
    return str(getattr(orig, "sqlite_errorname", "") or "")


_SQLITE_DAMAGED: Final = ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_IOERR")
_SQLITE_DENIED: Final = ("SQLITE_PERM", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_AUTH")
_PG_AUTH: Final = ("28000", "28P01")
_PG_NO_DATABASE: Final = "3D000"


def _sqlite_error(exc: BaseException, target: Target) -> StoreError:
    message = _first_line(exc)
    name = _sqlite_name(exc)
    path = target.sqlite_path
    lowered = message.lower()
    if name.startswith("SQLITE_FULL") or "disk is full" in lowered:
        return StoreDamaged(
            f"{path}: the disk is full ({message})",
            "Free disk space, then resume the run with `vigil resume RUN_ID`.",
            failure="disk-full",
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in lowered:
        return StoreRefused(
            f"{path} stayed locked by another process for {SQLITE_BUSY_TIMEOUT_S:.0f} s",
            "Find the process holding it (`fuser FILE`) and let it finish or stop it.",
            failure="locked",
        )
    if name.startswith(_SQLITE_DENIED) or "readonly" in lowered or "unable to open" in lowered:
        return StoreMisconfigured(
            f"{path} cannot be opened for writing ({message})",
            "Give your user read and write access to the file and its directory, or set "
            "VIGIL_DATABASE_URL to a store you can write.",
            failure="permission",
        )
    if (
        name.startswith(_SQLITE_DAMAGED)
        or "not a database" in lowered
        or "malformed" in lowered
        or "corrupt" in lowered
    ):
        return StoreDamaged(
            f"{path} is not a readable SQLite database ({message})",
            DAMAGED_REMEDY,
            failure="damaged",
        )
    # Anything else SQLite says about a store vigil created (a missing table or column,
    # a constraint the schema has lost) means the file no longer holds vigil's schema.
    return StoreDamaged(
        f"{path} does not hold a store vigil can use ({message})",
        DAMAGED_REMEDY,
        failure="damaged",
    )


def _postgresql_error(exc: BaseException, target: Target) -> StoreError:
    message = _first_line(exc)
    orig = getattr(exc, "orig", None) or exc
    sqlstate = str(getattr(orig, "sqlstate", "") or "")
    where = f"PostgreSQL at {target.display}"
    if sqlstate in _PG_AUTH or "authentication failed" in message:
        return StoreMisconfigured(
            f"{where} refused the login ({message})",
            "Check the user and password in VIGIL_DATABASE_URL (or ~/.pgpass) and the "
            "server's pg_hba.conf.",
            failure="auth",
        )
    if sqlstate == _PG_NO_DATABASE or ("database" in message and "does not exist" in message):
        return StoreMisconfigured(
            f"{where}: the database does not exist ({message})",
            "Create it (`createdb NAME`) or name an existing database in VIGIL_DATABASE_URL.",
            failure="missing-database",
        )
    if sqlstate.startswith("53100") or "No space left" in message:
        return StoreDamaged(
            f"{where} is out of disk space ({message})",
            "Free space on the database server, then resume the run.",
            failure="disk-full",
        )
    if sqlstate.startswith("42501"):
        return StoreMisconfigured(
            f"{where} denied access ({message})",
            "Grant the store's user rights on vigil's tables (see docs/security.md).",
            failure="permission",
        )
    import psycopg  # only a PostgreSQL store pays for the driver's import

    if isinstance(orig, psycopg.OperationalError) and not sqlstate:
        return StoreMisconfigured(
            f"{where} cannot be reached ({message})",
            "Start the server or fix the host and port in VIGIL_DATABASE_URL.",
            failure="unreachable",
        )
    return StoreError(f"{where} failed: {message}", failure="failed")


def as_store_error(exc: BaseException, target: Target) -> StoreError:
    """The StoreError a person should see for a driver failure on ``target``."""
    if target.backend == "postgresql":
        return _postgresql_error(exc, target)
    return _sqlite_error(exc, target)


def damaged(target: Target, what: str) -> StoreDamaged:
    """The error for a row that the database returned but vigil cannot decode."""
    where = target.sqlite_path or target.display
    return StoreDamaged(
        f"{where} holds a damaged record ({what})",
        DAMAGED_REMEDY if target.backend == "sqlite" else "Restore the database from a backup.",
        failure="damaged",
    )


@contextmanager
def store_errors(target: Target) -> Iterator[None]:
    """Re-raise database and driver failures inside the block as StoreError."""
    failures: tuple[type[BaseException], ...] = (sa.exc.DBAPIError, sqlite3.Error)
    if target.backend == "postgresql":
        import psycopg  # only a PostgreSQL store pays for the driver's import

        failures = (*failures, psycopg.Error)
    try:
        yield
    except sa.exc.IntegrityError:
        # A constraint violation is a bug in the caller, not a broken store.
        raise
    except failures as exc:
        raise as_store_error(exc, target) from exc
    except UnicodeDecodeError as exc:
        # The driver found bytes in a text column that are not UTF-8: vigil never wrote
        # them, so the file is damaged.
        raise damaged(target, f"undecodable text: {exc.reason}") from exc
