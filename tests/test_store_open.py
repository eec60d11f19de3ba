"""Opening a store: migrations, SQLite settings, and failures a person can act on."""

from __future__ import annotations

import importlib.resources
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from vigil.errors import ConfigError, StoreError
from vigil.store import HEAD_REVISION, NewRun, migrate, open_store
from vigil.store.schema import metadata


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def run(run_id: str) -> NewRun:
    return NewRun(run_id, "p", "proj", "h", "{}", "plan.yaml", "/ws", 1.0, {})


def test_open_migrates_an_empty_database_to_head(store_url: str) -> None:
    with open_store(store_url):
        pass
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            assert {"runs", "events", "halts", "alembic_version"} <= set(
                inspector.get_table_names()
            )
            assert "ix_runs_created_at" in {i["name"] for i in inspector.get_indexes("runs")}
            assert inspector.get_pk_constraint("events")["constrained_columns"] == [
                "run_id",
                "seq",
            ]
            assert migrate.current_revision(conn) == HEAD_REVISION
            # The queries' table definitions and the migrations describe the same schema.
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    finally:
        engine.dispose()


def test_head_revision_matches_the_shipped_migrations() -> None:
    script = ScriptDirectory(str(migrate.MIGRATIONS_DIR))
    assert script.get_current_head() == HEAD_REVISION


def test_migrations_ship_as_package_data() -> None:
    root = importlib.resources.files("vigil.store") / "migrations"
    assert (root / "env.py").is_file()
    assert (root / "script.py.mako").is_file()
    assert any(p.name.endswith(".py") for p in (root / "versions").iterdir())


@pytest.mark.slow
def test_opening_a_current_store_does_not_load_alembic(store_url: str) -> None:
    with open_store(store_url):
        pass
    probe = "import sys; from vigil.store import open_store; open_store(sys.argv[1]).close(); "
    probe += "print('alembic' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe, store_url], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.slow
def test_concurrent_first_opens_all_succeed(store_url: str) -> None:
    script = (
        "import sys; from vigil.store import open_store, NewRun\n"
        "s = open_store(sys.argv[1])\n"
        "s.create_run(NewRun(sys.argv[2], 'p', 'x', 'h', '{}', 'p', '/w', 1.0, {}))\n"
        "s.close()\n"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, store_url, f"r{i}"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    errors = [child.communicate()[1] for child in children]
    assert [child.returncode for child in children] == [0, 0, 0], errors
    with open_store(store_url) as store:
        assert sorted(r.id for r in store.list_runs()) == ["r0", "r1", "r2"]


def test_a_schema_newer_than_this_vigil_is_refused(store_url: str) -> None:
    with open_store(store_url):
        pass
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreError, match="newer than this vigil"):
        open_store(store_url)


def test_sqlite_store_is_wal_with_full_sync(sqlite_store_url: str) -> None:
    with open_store(sqlite_store_url) as store:
        assert store.backend == "sqlite"
        conn = store._reader  # the pragma is per connection; ask the store's own
        assert conn is not None
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        conn.rollback()
    assert sqlite_path(sqlite_store_url).is_file()


def test_sqlite_sync_can_be_relaxed_to_normal(
    sqlite_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_SQLITE_SYNCHRONOUS", "normal")
    with open_store(sqlite_store_url) as store:
        assert store._reader is not None
        assert store._reader.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        store._reader.rollback()


def test_bad_sync_setting_is_a_config_error(
    sqlite_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_SQLITE_SYNCHRONOUS", "OFF")
    with pytest.raises(ConfigError, match="VIGIL_SQLITE_SYNCHRONOUS"):
        open_store(sqlite_store_url)


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(64 * 1024))


def _garbage_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    assert len(data) > 8192
    data[4096:] = os.urandom(len(data) - 4096)
    path.write_bytes(bytes(data))


def _truncated(path: Path) -> None:
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 3)


@pytest.mark.parametrize("damage", [_random_bytes, _garbage_pages, _truncated])
def test_damaged_sqlite_file_is_a_store_error_with_a_remedy(
    sqlite_store_url: str, damage: object
) -> None:
    with open_store(sqlite_store_url) as store:
        for i in range(40):
            store.create_run(run(f"r{i}"))
            store.append(f"r{i}", [("e", {"pad": "x" * 500})] * 5, at=1.0)
    path = sqlite_path(sqlite_store_url)
    assert callable(damage)
    damage(path)

    with pytest.raises(StoreError) as failed, open_store(sqlite_store_url) as store:
        # Some damage only shows when the damaged pages are read.
        for record in store.list_runs(limit=1000):
            store.events(record.id)
        store.create_run(run("new"))
        store.append("new", [("e", {})], at=2.0)
    assert str(path) in failed.value.cause
    assert "Move the damaged file aside" in failed.value.remedy


def test_unreachable_postgresql_is_a_store_error_without_the_password() -> None:
    with pytest.raises(StoreError) as failed:
        open_store("postgresql+psycopg://vigil:s3cret-pw@127.0.0.1:1/vigil")
    assert "127.0.0.1" in failed.value.cause
    assert "s3cret-pw" not in str(failed.value) + failed.value.remedy


def test_plain_postgresql_url_uses_psycopg(pg_store_url: str) -> None:
    plain = pg_store_url.replace("postgresql+psycopg://", "postgresql://")
    with open_store(plain) as store:
        assert store.backend == "postgresql"
        assert store.create_run(run("r1"))


def test_unwritable_sqlite_location_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot create"):
        open_store(f"sqlite:///{blocker / 'sub' / 'vigil.db'}")


def test_directory_in_place_of_the_database_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "vigil.db").mkdir()
    with pytest.raises(StoreError, match=r"vigil\.db"):
        open_store(f"sqlite:///{tmp_path / 'vigil.db'}")


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "mysql://root@localhost/vigil",
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql+asyncpg://postgres@127.0.0.1/test",
    ],
)
def test_unsupported_urls_are_store_errors(url: str) -> None:
    with pytest.raises(StoreError):
        open_store(url)


def test_sqlite_database_is_readable_by_plain_sqlite(sqlite_store_url: str) -> None:
    # Operators debug with the sqlite3 shell; the journal must be plain rows and JSON text.
    with open_store(sqlite_store_url) as store:
        store.create_run(run("r1"))
        store.append("r1", [("hello", {"a": [1, 2]})], at=1.0)
    with sqlite3.connect(sqlite_path(sqlite_store_url)) as raw:
        assert raw.execute("SELECT seq, kind, data FROM events").fetchall() == [
            (1, "hello", '{"a":[1,2]}')
        ]


def test_store_shows_urls_without_the_password(pg_store_url: str) -> None:
    # The server trusts local connections, so the password is accepted and ignored.
    url = sa.make_url(pg_store_url).set(password="s3cret-pw")
    full = url.render_as_string(hide_password=False)
    with open_store(full) as store:
        assert store.url == full  # kept whole so other processes can reopen it
        assert "s3cret-pw" not in repr(store) + store.display_url
