"""Opening the database behind a store, and turning driver failures into StoreError.

SQLite runs in WAL mode with ``synchronous=FULL`` unless ``VIGIL_SQLITE_SYNCHRONOUS=NORMAL``
relaxes it: NORMAL still survives ``kill -9`` of any process, but a power cut or kernel
crash may lose the last transactions. Write transactions start with ``BEGIN IMMEDIATE`` so
two processes appending at once queue on the busy timeout instead of failing on a lock
upgrade.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import psycopg
import sqlalchemy as sa
from sqlalchemy import event

from vigil.errors import ConfigError, StoreError

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
        raise StoreError(
            f"{url!r} is not a database URL",
            "Use sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB.",
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            raise StoreError(
                f"{parsed.render_as_string(hide_password=True)} is an in-memory database",
                "Point the store at a file (sqlite:///PATH) so runs survive the process.",
            )
        return Target(parsed, "sqlite", Path(database).expanduser().absolute())
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            # psycopg 3 is the driver we ship; plain postgresql:// would ask for psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg")
        elif parsed.drivername != "postgresql+psycopg":
            raise StoreError(
                f"driver {parsed.drivername!r} is not supported",
                "Use postgresql+psycopg://USER@HOST:PORT/DB.",
            )
        return Target(parsed, "postgresql", None)
    raise StoreError(
        f"database {backend!r} is not supported by the run store",
        "Use SQLite (sqlite:///PATH) or PostgreSQL (postgresql+psycopg://...).",
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
        target.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot create {target.sqlite_path.parent}: {exc.strerror or exc}",
            "Choose a writable --workspace or set VIGIL_DATABASE_URL to a writable path.",
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


def as_store_error(exc: BaseException, target: Target) -> StoreError:
    """The StoreError a person should see for a driver failure on ``target``."""
    message = _first_line(exc)
    if target.backend == "postgresql":
        return StoreError(f"PostgreSQL at {target.display} failed: {message}")
    path = target.sqlite_path
    lowered = message.lower()
    if "not a database" in lowered or "malformed" in lowered:
        return StoreError(f"{path} is not a readable SQLite database ({message})", DAMAGED_REMEDY)
    if "locked" in lowered or "busy" in lowered:
        return StoreError(
            f"{path} stayed locked by another process for {SQLITE_BUSY_TIMEOUT_S:.0f} s",
            "Find the process holding it (`fuser FILE`) and let it finish or stop it.",
        )
    if "disk is full" in lowered:
        return StoreError(f"{path}: {message}", "Free disk space, then resume the run.")
    return StoreError(f"SQLite database {path} failed: {message}")


@contextmanager
def store_errors(target: Target) -> Iterator[None]:
    """Re-raise database and driver failures inside the block as StoreError."""
    try:
        yield
    except sa.exc.IntegrityError:
        # A constraint violation is a bug in the caller, not a broken store.
        raise
    except (sa.exc.DBAPIError, sqlite3.Error, psycopg.Error) as exc:
        raise as_store_error(exc, target) from exc
