"""Migration 0003: plans move out of the run's summary row, and nothing is lost."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command

from vigil.store import NewRun, migrate, open_store


def _store_at_0001_with_a_run(url: str) -> None:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        command.upgrade(migrate.alembic_config(conn), "0001")
        conn.execute(
            sa.text(
                "INSERT INTO runs (id, plan_name, project, plan_hash, plan_json, plan_path,"
                " workspace, options, state, created_at, updated_at, last_seq) VALUES"
                " ('old', 'p', 'proj', 'h', '{\"phases\":[1]}', 'p.yaml', '/w', '{}',"
                " 'running', 1.0, 1.0, 1)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO events (run_id, seq, kind, data, at)"
                " VALUES ('old', 1, 'run.created', '{}', 1.0)"
            )
        )
    engine.dispose()


def test_upgrade_keeps_the_plans_and_journals_of_existing_runs(store_url: str) -> None:
    _store_at_0001_with_a_run(store_url)
    with open_store(store_url) as store:
        record = store.get_run("old")
        assert record is not None
        assert record.plan_json == '{"phases":[1]}'
        assert record.last_seq == 1
        assert [e.kind for e in store.events("old")] == ["run.created"]
        assert [r.plan_json for r in store.list_runs()] == ['{"phases":[1]}']
        # New runs keep working next to the migrated one.
        assert store.create_run(NewRun("new", "p", "proj", "h2", '{"n":2}', "p", "/w", 2.0))
        assert store.append("new", [("run.created", {})], at=2.0) == 1
        new = store.get_run("new")
        assert new is not None and new.plan_json == '{"n":2}'
    engine = sa.create_engine(store_url)
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("runs")}
    engine.dispose()
    assert "plan_json" not in columns


def test_a_repeated_create_keeps_the_first_plan(store_url: str) -> None:
    with open_store(store_url) as store:
        assert store.create_run(NewRun("r", "p", "proj", "h", "first", "p", "/w", 1.0))
        assert not store.create_run(NewRun("r", "p", "proj", "h", "second", "p", "/w", 1.0))
        record = store.get_run("r")
        assert record is not None and record.plan_json == "first"
