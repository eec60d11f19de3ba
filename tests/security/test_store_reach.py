"""`vigil doctor` warns when steps could reach the run store (issue 10, class 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clitools import PG_BASE_URL, vigil
from vigil.safety.store_reach import store_reach


@pytest.mark.slow
def test_doctor_warns_about_a_loopback_postgresql_store_with_trust_auth(tmp_path: Path) -> None:
    out = vigil("doctor", "-o", "json", cwd=tmp_path, env={"VIGIL_DATABASE_URL": PG_BASE_URL})
    assert out.returncode == 0, out.stderr
    (reach,) = json.loads(out.stdout)["store_reachable_by_steps"]
    assert "granted `network`" in reach["problem"] and "trust authentication" in reach["problem"]
    text = vigil("doctor", cwd=tmp_path, env={"VIGIL_DATABASE_URL": PG_BASE_URL})
    assert "warning:" in text.stdout and "docs/security.md" in text.stdout


@pytest.mark.slow
def test_doctor_is_quiet_about_the_default_sqlite_store(tmp_path: Path) -> None:
    out = vigil("doctor", "-o", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["store_reachable_by_steps"] == []


def test_sockets_loopback_and_outside_files_are_named(tmp_path: Path) -> None:
    state = tmp_path / ".vigil"
    socket = store_reach("postgresql+psycopg://app@/vigil?host=/run/postgresql", state)
    assert "Unix socket in /run/postgresql" in socket[0].problem
    for host in ("localhost", "127.0.0.1", "127.8.9.10", "[::1]"):
        found = store_reach(f"postgresql+psycopg://app:pw@{host}:5432/vigil", state)
        assert len(found) == 1 and "trust" not in found[0].problem, host
    assert store_reach("postgresql+psycopg://app:pw@db.internal:5432/vigil", state) == []
    outside = store_reach(f"sqlite:///{tmp_path / 'elsewhere.db'}", state)
    assert "outside the state directory" in outside[0].problem
    assert store_reach(f"sqlite:///{state / 'vigil.db'}", state) == []
