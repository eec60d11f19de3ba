"""A damaged, lost or unreachable store is a clear VIGIL-STORE error, never a bug report,
and never a silent fresh start over the history of earlier runs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from clitools import vigil, write_plan
from vigil.errors import ExitCode

STORE_EXITS = {ExitCode.USAGE, ExitCode.REFUSED, ExitCode.STORE}


def _plan() -> dict[str, object]:
    tasks = [
        {"id": f"t{i}", "run": f"echo output-{i} && echo data-{i} > file{i}.txt"} for i in range(4)
    ]
    return {"name": "damage", "project": "damage", "phases": [{"id": "p", "tasks": tasks}]}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace after two real runs: store, logs, objects, commit log, reports."""
    ws = tmp_path_factory.mktemp("pristine") / "ws"
    ws.mkdir()
    write_plan(ws / "plan.yaml", _plan())
    for run_id in ("r1", "r2"):
        done = vigil("run", "plan.yaml", "--run-id", run_id, cwd=ws)
        assert done.returncode == 0, done.stderr
    db = ws / ".vigil" / "vigil.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert (ws / ".vigil" / "logs").is_dir() and (ws / ".vigil" / "objects").is_dir()
    return ws


@pytest.fixture
def ws(pristine: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ws"
    shutil.copytree(pristine, copy, symlinks=True)
    return copy


APPEND_ONLY = ("audit/", "commits.log")
"""Logs that record refusals too: they may grow, never change what they held."""


def history(ws: Path) -> dict[str, bytes]:
    """Every file of earlier runs (not the store itself) and its content."""
    state = ws / ".vigil"
    out: dict[str, bytes] = {}
    for path in sorted(state.rglob("*")):
        rel = path.relative_to(state).as_posix()
        if rel.startswith(("vigil.db", "locks")) or not path.is_file():
            continue
        out[rel] = path.read_bytes()
    return out


def assert_history_kept(before: dict[str, bytes], ws: Path) -> None:
    """No file of earlier runs was removed or rewritten (append-only logs may grow)."""
    after = history(ws)
    for rel, content in before.items():
        assert rel in after, f"{rel} was removed"
        if rel.startswith(APPEND_ONLY):
            assert after[rel].startswith(content), f"{rel} was rewritten"
        else:
            assert hashlib.sha256(after[rel]).digest() == hashlib.sha256(content).digest(), rel


def assert_store_error(out: subprocess.CompletedProcess[str], failure: str | None = None) -> dict:
    assert out.returncode != ExitCode.INTERNAL, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "VIGIL-INTERNAL" not in out.stdout + out.stderr
    assert out.returncode in STORE_EXITS, (out.returncode, out.stdout, out.stderr)
    if not out.stdout.startswith("{"):
        # A command without --format json (vigil logs): the same error, for people.
        assert "error VIGIL-STORE: " in out.stderr and "remedy: " in out.stderr, out.stderr
        return {}
    error = json.loads(out.stdout)["error"]
    assert error["code"] == "VIGIL-STORE"
    assert error["cause"] and error["remedy"]
    if failure is not None:
        assert error["failure"] == failure, error
    return dict(error)


def commands(ws: Path) -> list[subprocess.CompletedProcess[str]]:
    """What a person runs next: list, inspect, read logs, run again."""
    return [
        vigil("runs", "--format", "json", cwd=ws),
        vigil("status", "r1", "--format", "json", cwd=ws),
        vigil("logs", "r2", "t1", cwd=ws),
        vigil("run", "plan.yaml", "--run-id", "r3", "--format", "json", cwd=ws),
    ]


def _offsets(size: int) -> list[int]:
    """Header fields, the schema page (sqlite_master), and one spot in every data page."""
    page = 4096
    header = [0, 16, 18, 21, 28, 56, 96]
    schema_page = [100, 105, 107, 300, 2000, 4000]
    data = [page * k + (2048 if k % 2 else 8) for k in range(1, size // page)]
    return [o for o in header + schema_page + data if o < size]


@pytest.mark.slow
def test_flipped_bytes_anywhere_are_store_errors_or_harmless(
    pristine: Path, tmp_path: Path
) -> None:
    db = pristine / ".vigil" / "vigil.db"
    offsets = _offsets(db.stat().st_size)
    assert len(offsets) > 20
    detected = 0
    for index, offset in enumerate(offsets):
        ws = tmp_path / f"flip-{offset}"
        shutil.copytree(pristine, ws, symlinks=True)
        before = history(ws)
        target = ws / ".vigil" / "vigil.db"
        data = bytearray(target.read_bytes())
        data[offset] ^= 0xFF
        target.write_bytes(bytes(data))
        # Listing and inspecting after every flip; reading logs and running again after
        # every fourth (each command is a process start).
        tried = commands(ws) if index % 4 == 0 else commands(ws)[:2]
        for out in tried:
            assert out.returncode != ExitCode.INTERNAL, (offset, out.stdout, out.stderr)
            assert "Traceback" not in out.stderr, (offset, out.stderr)
            if "VIGIL-STORE" in out.stderr:
                detected += 1
            if out.returncode in STORE_EXITS and '"error"' in out.stdout:
                error = json.loads(out.stdout)["error"]
                if error["code"] == "VIGIL-STORE":
                    detected += 1
                    assert error["remedy"], offset
        assert_history_kept(before, ws)
        shutil.rmtree(ws)
    assert detected > 0


@pytest.mark.slow
def test_header_damage_names_the_file_and_the_remedy(ws: Path) -> None:
    db = ws / ".vigil" / "vigil.db"
    data = bytearray(db.read_bytes())
    data[0:16] = b"garbage garbage!"
    db.write_bytes(bytes(data))
    error = assert_store_error(vigil("runs", "--format", "json", cwd=ws), "damaged")
    assert str(db) in error["cause"]
    assert "Move the damaged file aside" in error["remedy"]
    plain = vigil("runs", cwd=ws)
    assert plain.returncode == ExitCode.STORE
    assert "VIGIL-STORE" in plain.stderr and "remedy:" in plain.stderr


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["truncate", "delete"])
def test_lost_store_beside_history_is_refused_until_asked(ws: Path, loss: str) -> None:
    db = ws / ".vigil" / "vigil.db"
    before = history(ws)
    if loss == "truncate":
        db.write_bytes(b"")
    else:
        db.unlink()
    for out in commands(ws):
        error = assert_store_error(out, "history-without-store")
        assert out.returncode == ExitCode.REFUSED
        assert "vigil store init --force" in error.get("remedy", out.stderr)
    assert_history_kept(before, ws)
    assert not db.exists() or db.stat().st_size == 0
    # Without --force, init refuses too; with it, a new store starts and history stays.
    assert_store_error(vigil("store", "init", "--format", "json", cwd=ws), "history-without-store")
    made = vigil("store", "init", "--force", cwd=ws)
    assert made.returncode == 0, made.stderr
    assert_history_kept(before, ws)
    again = vigil("run", "plan.yaml", "--run-id", "r3", "--format", "json", cwd=ws)
    assert again.returncode == 0, again.stderr
    assert_history_kept(before, ws)


@pytest.mark.slow
def test_a_fresh_workspace_still_creates_its_store(tmp_path: Path) -> None:
    write_plan(tmp_path / "plan.yaml", _plan())
    out = vigil("run", "plan.yaml", "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_store_is_a_permission_error(ws: Path) -> None:
    db = ws / ".vigil" / "vigil.db"
    db.chmod(0)
    try:
        for out in commands(ws)[:2]:
            error = assert_store_error(out, "permission")
            assert out.returncode == ExitCode.USAGE
            assert str(db) in error["cause"]
    finally:
        db.chmod(0o600)


@pytest.mark.slow
def test_unwritable_store_directory_is_a_store_error(ws: Path) -> None:
    # chmod 000 does not stop root, so the root-proof variant: the store's path runs
    # through a regular file.
    blocker = ws / "not-a-dir"
    blocker.write_text("x")
    url = f"sqlite:///{blocker}/vigil.db"
    error = assert_store_error(
        vigil("runs", "--format", "json", cwd=ws, env={"VIGIL_DATABASE_URL": url}), "permission"
    )
    assert "not-a-dir" in error["cause"]


@pytest.mark.slow
def test_store_locked_beyond_the_timeout_is_refused(ws: Path) -> None:
    import vigil.store.connect as connect

    db = ws / ".vigil" / "vigil.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, vigil.store.connect as c; c.SQLITE_BUSY_TIMEOUT_S = 0.01; "
                "from vigil.cli.main import main; main(sys.argv[1:])",
                *("run", "plan.yaml", "--run-id", "r3", "--format", "json"),
            ],
            cwd=ws,
            capture_output=True,
            text=True,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")},
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert connect.SQLITE_BUSY_TIMEOUT_S > 1
    error = assert_store_error(out, "locked")
    assert out.returncode == ExitCode.REFUSED
    assert "fuser" in error["remedy"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("url", "failure"),
    [
        ("postgresql+psycopg://postgres@127.0.0.1:1/test", "unreachable"),
        ("postgresql+psycopg://postgres@127.0.0.1:5432/no_such_db_vigil", "missing-database"),
        ("mysql://root@localhost/vigil", "unsupported-url"),
        ("sqlite:///:memory:", "unsupported-url"),
        ("not a url", "unsupported-url"),
    ],
)
def test_bad_or_unreachable_store_urls_are_configuration_errors(
    tmp_path: Path, url: str, failure: str
) -> None:
    out = vigil("runs", "--format", "json", cwd=tmp_path, env={"VIGIL_DATABASE_URL": url})
    assert_store_error(out, failure)
    assert out.returncode == ExitCode.USAGE


@pytest.mark.slow
def test_empty_postgresql_store_beside_history_is_refused(ws: Path, pg_store_url: str) -> None:
    before = history(ws)
    out = vigil("runs", "--format", "json", cwd=ws, env={"VIGIL_DATABASE_URL": pg_store_url})
    assert_store_error(out, "history-without-store")
    assert_history_kept(before, ws)


@pytest.mark.slow
def test_newer_schema_is_a_configuration_error(ws: Path) -> None:
    with sqlite3.connect(ws / ".vigil" / "vigil.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    out = vigil("runs", "--format", "json", cwd=ws)
    error = assert_store_error(out, "newer-schema")
    assert out.returncode == ExitCode.USAGE
    assert "Upgrade vigil" in error["remedy"]
