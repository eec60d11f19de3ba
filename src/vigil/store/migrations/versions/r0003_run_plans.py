"""Move each run's plan out of the ``runs`` row into ``run_plans``.

Every journal append updates the run's summary row (``last_seq``, ``updated_at``,
``state``). SQLite rewrites a whole row on update, overflow pages included, so with the
plan inside that row each append cost time proportional to the plan's size: a run of
10,000 tasks spent most of its time rewriting its own plan. The summary row is now small.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``run_plans``, copy every plan into it, drop ``runs.plan_json``."""
    op.create_table(
        "run_plans",
        sa.Column("run_id", sa.String(200), primary_key=True),
        sa.Column("plan_json", sa.Text, nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_run_plans_run_id"),
    )
    op.execute("INSERT INTO run_plans (run_id, plan_json) SELECT id, plan_json FROM runs")
    # SQLite 3.35+ and PostgreSQL both drop a column in place; no table copy is needed.
    op.drop_column("runs", "plan_json")


def downgrade() -> None:
    """Put the plans back into ``runs`` and drop ``run_plans``."""
    op.add_column("runs", sa.Column("plan_json", sa.Text, nullable=False, server_default=""))
    op.execute(
        "UPDATE runs SET plan_json = "
        "(SELECT plan_json FROM run_plans WHERE run_plans.run_id = runs.id)"
    )
    op.drop_table("run_plans")
