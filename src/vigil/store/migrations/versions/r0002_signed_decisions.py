"""Signed halts and the audit log's head.

``halts.statement`` holds the signed halt or unhalt statement of the row (an unhalt keeps
the row as a tombstone, so removing a halt takes a signature, not a DELETE);
``audit_heads`` keeps the newest sealed size and root of each workspace's audit log, a
second record that ``vigil audit verify`` compares the log with.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the statement column and the audit heads table."""
    with op.batch_alter_table("halts") as batch:
        batch.add_column(sa.Column("statement", sa.Text, nullable=True))
    op.create_table(
        "audit_heads",
        sa.Column("log", sa.String(500), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    """Drop what :func:`upgrade` added."""
    op.drop_table("audit_heads")
    with op.batch_alter_table("halts") as batch:
        batch.drop_column("statement")
