"""Shared fixtures.

Store fixtures run every store test against SQLite and PostgreSQL. PostgreSQL gets a
fresh database per test session and a fresh schema per test; if the server cannot be
reached the PostgreSQL tests fail rather than skip, so a green run means both backends
were exercised. ``VIGIL_TEST_PG_URL`` points at the server (any database on it).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings

from clitools import PG_BASE_URL
from vigil.store import Store, open_store

# Hypothesis' defaults are speed bounds: an example that takes longer than 200 ms fails the
# test (DeadlineExceeded, or Flaky when its replay is quicker), and slow data generation
# fails a health check. On a loaded machine a correct property can be that slow, so the
# whole suite runs without both; a test's own @settings still sets its example count.
settings.register_profile("vigil", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("vigil")


def _render(url: sa.URL) -> str:
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """URL of a PostgreSQL database created for this test session and dropped after it."""
    name = f"vigil_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_BASE_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        yield _render(sa.make_url(PG_BASE_URL).set(database=name))
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@pytest.fixture
def pg_store_url(pg_database_url: str) -> Iterator[str]:
    """URL of an empty PostgreSQL schema (via search_path) private to one test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_database_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = sa.make_url(pg_database_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield _render(url)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.dispose()


@pytest.fixture
def sqlite_store_url(tmp_path: Path) -> str:
    """URL of a SQLite store where vigil puts it: ``<workspace>/.vigil/vigil.db``."""
    return f"sqlite:///{tmp_path / 'workspace' / '.vigil' / 'vigil.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """URL of an empty store, once per backend."""
    name = "sqlite_store_url" if request.param == "sqlite" else "pg_store_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An open, migrated, empty store, once per backend."""
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the ``vigil`` commands of a test (tests/clitools.py) on each store: SQLite in
    the workspace (the default), then a fresh PostgreSQL schema. Yields the backend name."""
    import clitools

    if request.param == "sqlite":
        yield "sqlite"
        return
    url = str(request.getfixturevalue("pg_store_url"))
    clitools.STORE_ENV["VIGIL_DATABASE_URL"] = url
    try:
        yield "postgresql"
    finally:
        clitools.STORE_ENV.pop("VIGIL_DATABASE_URL", None)


@pytest.fixture
def loopback() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on the host's 127.0.0.1 that records what each connection sent: its port
    and the list of what it received."""
    import socket
    import threading

    received: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                received.append(conn.recv(100))

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield listener.getsockname()[1], received
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.fixture(autouse=True)
def _own_user_config(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test gets its own user configuration directory (keys, trusted keys, grants).

    The default one (``~/.config/vigil``) would be shared by every test of a session, on
    both workers: a key one test rotates would stop another's runs from verifying. The
    commands a test starts inherit it (``clitools.cli_env`` passes ``XDG_CONFIG_HOME`` on);
    a test that sets ``VIGIL_CONFIG_DIR`` or its own ``XDG_CONFIG_HOME`` still wins.
    """
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
    # Nor does a VIGIL_CONFIG_DIR an earlier test left in this process reach this one.
    monkeypatch.delenv("VIGIL_CONFIG_DIR", raising=False)
