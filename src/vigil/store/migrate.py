"""Bringing a store's schema up to date with the migrations shipped in ``migrations/``.

Opening a store that is already current costs one catalogue lookup and one row read;
Alembic is imported only when there is something to do. Concurrent first opens are
serialised by the write lock (SQLite) or a transaction-scoped advisory lock (PostgreSQL),
and the version is read again under that lock.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Final

import sqlalchemy as sa

from vigil.errors import StoreMisconfigured

if TYPE_CHECKING:
    from alembic.config import Config

HEAD_REVISION: Final = "0003"
"""The newest migration; a test checks it matches the ``migrations/versions`` scripts."""

MIGRATIONS_DIR: Final = Path(__file__).with_name("migrations")
VERSION_TABLE: Final = "alembic_version"
_MIGRATION_LOCK_KEY: Final = int.from_bytes(
    hashlib.blake2b(b"vigil-store-migrations", digest_size=8).digest(), "big", signed=True
)


def current_revision(conn: sa.Connection) -> str | None:
    """The schema revision recorded in the database, or None for an empty database."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    row = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).first()
    return None if row is None else str(row[0])


def alembic_config(conn: sa.Connection | None = None) -> Config:
    """An Alembic ``Config`` for the shipped migrations, bound to ``conn`` if given."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if conn is not None:
        config.attributes["connection"] = conn
    return config


def _check_known(revision: str) -> None:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    script = ScriptDirectory(str(MIGRATIONS_DIR))
    try:
        known = script.get_revision(revision)
    except CommandError:
        known = None
    if known is None:
        raise StoreMisconfigured(
            f"the store's schema is at revision {revision!r}, newer than this vigil knows",
            "Upgrade vigil to the version that last wrote this store.",
            failure="newer-schema",
        )


def upgrade(reader: sa.Connection, writer: sa.Connection) -> bool:
    """Migrate to :data:`HEAD_REVISION`; returns whether anything was migrated.

    ``writer`` must take the database's write lock when it begins a transaction.
    """
    with reader.begin():
        if current_revision(reader) == HEAD_REVISION:
            return False
    with writer.begin():
        if writer.dialect.name == "postgresql":
            writer.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
        revision = current_revision(writer)
        if revision == HEAD_REVISION:
            return False
        if revision is not None:
            _check_known(revision)
        from alembic import command

        # The open transaction is Alembic's "external transaction": every migration and
        # the version stamp commit together, or none do.
        command.upgrade(alembic_config(writer), "head")
    return True
