"""The store's tables as SQLAlchemy Core metadata, used by queries.

The migrations in ``migrations/versions`` create the same tables; a test compares the two
so they cannot drift apart. JSON is kept as text so SQLite and PostgreSQL store, compare
and return exactly the same bytes.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("plan_name", sa.Text, nullable=False),
    sa.Column("project", sa.Text, nullable=False),
    sa.Column("plan_hash", sa.String(128), nullable=False),
    sa.Column("plan_path", sa.Text, nullable=False),
    sa.Column("workspace", sa.Text, nullable=False),
    sa.Column("options", sa.Text, nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double, nullable=True),
    sa.Column("ended_at", sa.Double, nullable=True),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Index("ix_runs_created_at", "created_at"),
    sa.Index("ix_runs_project_created_at", "project", "created_at"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column(
        "run_id",
        sa.String(200),
        sa.ForeignKey("runs.id", name="fk_events_run_id"),
        primary_key=True,
    ),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(100), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("at", sa.Double, nullable=False),
)

# The plan lives apart from its run's summary row: that row is rewritten on every journal
# append, and SQLite rewrites a row whole (see migration 0003).
run_plans = sa.Table(
    "run_plans",
    metadata,
    sa.Column(
        "run_id",
        sa.String(200),
        sa.ForeignKey("runs.id", name="fk_run_plans_run_id"),
        primary_key=True,
    ),
    sa.Column("plan_json", sa.Text, nullable=False),
)

halts = sa.Table(
    "halts",
    metadata,
    sa.Column("project", sa.String(200), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("statement", sa.Text, nullable=True),
)

audit_heads = sa.Table(
    "audit_heads",
    metadata,
    sa.Column("log", sa.String(500), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("root", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)
