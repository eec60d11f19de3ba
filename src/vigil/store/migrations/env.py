"""Alembic environment: the connection comes from the caller, never from a config file."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from vigil.store.schema import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, sa.Connection):
    raise RuntimeError("vigil migrations run through vigil.store.open_store, not the CLI")

context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
