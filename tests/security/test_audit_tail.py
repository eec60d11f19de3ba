"""The newest audit entries are as safe as the sealed ones (issue 10, class 7).

After a refused start, an approval or a halt, the tail of the audit log is cut, edited or
rolled back together with its checkpoint file, or the store's record of the head is
rolled back or deleted; `vigil audit verify` must fail with VIGIL-AUDIT-TAMPERED each
time. An audit entry that cannot be written is never silently lost: the write raises and
the action is refused. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clitools import vigil, write_plan
from vigil.errors import ExitCode
from vigil.store import open_store

PLAN = {
    "name": "tail",
    "project": "shop",
    "phases": [
        {
            "id": "p",
            "tasks": [
                {"id": "ask", "approval": {"question": "Ship it?"}},
                {"id": "ship", "needs": ["ask"], "run": "echo shipped > shipped.txt"},
            ],
        }
    ],
}
NEEDS_GRANT = {
    "name": "deploy",
    "project": "shop",
    "phases": [{"id": "p", "tasks": [{"id": "d", "run": "true", "requires": ["deploy"]}]}],
}


def log_of(ws: Path) -> Path:
    return ws / ".vigil" / "audit" / "log.jsonl"


def verify(ws: Path, env: dict[str, str]) -> Any:
    return vigil("audit", "verify", cwd=ws, env=env)


def refused_start(ws: Path, env: dict[str, str]) -> None:
    write_plan(ws / "deploy.yaml", NEEDS_GRANT)
    done = vigil("run", "deploy.yaml", "--run-id", "nogrant", cwd=ws, env=env)
    assert done.returncode == ExitCode.REFUSED, done.stdout + done.stderr
    assert json.loads(log_of(ws).read_text().splitlines()[-1])["action"] == "run.start"


def approval(ws: Path, env: dict[str, str]) -> None:
    write_plan(ws / "p.yaml", PLAN)
    assert vigil("run", "p.yaml", "--run-id", "ok", cwd=ws, env=env).returncode == 5
    out = vigil("escalations", "--format", "json", cwd=ws, env=env)
    (question,) = json.loads(out.stdout)
    done = vigil("escalations", "answer", question["id"], "--approve", cwd=ws, env=env)
    assert done.returncode == 0, done.stderr
    assert (ws / "shipped.txt").exists()


def halt(ws: Path, env: dict[str, str]) -> None:
    done = vigil("halt", "--project", "shop", "--reason", "incident", cwd=ws, env=env)
    assert done.returncode == 0, done.stderr


def delete_last(ws: Path) -> None:
    lines = log_of(ws).read_bytes().splitlines(keepends=True)
    log_of(ws).write_bytes(b"".join(lines[:-1]))


def delete_last_two(ws: Path) -> None:
    lines = log_of(ws).read_bytes().splitlines(keepends=True)
    log_of(ws).write_bytes(b"".join(lines[:-2]))


def edit_last(ws: Path) -> None:
    lines = log_of(ws).read_bytes().splitlines(keepends=True)
    last = lines[-1]
    lines[-1] = (
        last.replace(b'"deny"', b'"allow"')
        if b'"deny"' in last
        else last.replace(b'"allow"', b'"deny"')
    )
    assert lines[-1] != last
    log_of(ws).write_bytes(b"".join(lines))


EVENTS: dict[str, Callable[[Path, dict[str, str]], None]] = {
    "refused-start": refused_start,
    "approval": approval,
    "halt": halt,
}
DAMAGE: dict[str, Callable[[Path], None]] = {
    "delete-last": delete_last,
    "delete-last-two": delete_last_two,
    "edit-last": edit_last,
}


@pytest.mark.slow
@pytest.mark.parametrize("event", list(EVENTS))
def test_damage_at_the_tail_is_detected(ws: Path, env: dict[str, str], event: str) -> None:
    EVENTS[event](ws, env)
    assert verify(ws, env).returncode == 0
    intact = log_of(ws).read_bytes()
    for name, damage in DAMAGE.items():
        damage(ws)
        found = verify(ws, env)
        assert found.returncode == ExitCode.REFUSED, (name, found.stdout)
        assert "VIGIL-AUDIT-TAMPERED" in found.stderr, name
        log_of(ws).write_bytes(intact)
        assert verify(ws, env).returncode == 0, name


@pytest.mark.slow
@pytest.mark.parametrize("event", list(EVENTS))
def test_a_log_rolled_back_with_its_checkpoints_is_detected(
    ws: Path, env: dict[str, str], event: str
) -> None:
    # Something is on the record first, so the rollback leaves a valid-looking older log.
    assert vigil("grant", "list", cwd=ws, env=env).returncode == 0
    refused_start(ws, env) if event != "refused-start" else halt(ws, env)
    saved = {p: p.read_bytes() for p in log_of(ws).parent.iterdir()}
    EVENTS[event](ws, env)
    for path, data in saved.items():
        path.write_bytes(data)
    found = verify(ws, env)
    assert found.returncode == ExitCode.REFUSED and "the log's tail was cut" in found.stderr


@pytest.mark.slow
def test_a_rolled_back_or_deleted_store_record_is_detected(
    ws: Path, env: dict[str, str], store_url: str
) -> None:
    refused_start(ws, env)
    name = str(log_of(ws).resolve())
    with open_store(store_url) as store:
        older = store.audit_head(name)
        assert older is not None
    halt(ws, env)
    assert verify(ws, env).returncode == 0
    with open_store(store_url) as store:
        store.set_audit_head(name, older.size, older.root, older.updated_at)
    found = verify(ws, env)
    assert found.returncode == ExitCode.REFUSED and "rolled back" in found.stderr
    with open_store(store_url) as store:
        store.set_audit_head(name, older.size + 1, older.root, older.updated_at)
    found = verify(ws, env)
    assert found.returncode == ExitCode.REFUSED and "the log was edited" in found.stderr


@pytest.mark.slow
def test_a_deleted_store_record_is_detected(ws: Path, env: dict[str, str], store_url: str) -> None:
    import sqlalchemy as sa

    refused_start(ws, env)
    with open_store(store_url) as store, store._write() as conn:
        conn.execute(sa.text("DELETE FROM audit_heads"))
    found = verify(ws, env)
    assert found.returncode == ExitCode.REFUSED and "no record of this log" in found.stderr


# -- an audit write that fails is never a silent loss ----------------------------------


@pytest.mark.slow
def test_a_full_disk_refuses_the_action_and_leaves_the_log_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vigil.config import load_config
    from vigil.engine.audit import Auditor
    from vigil.plan.models import Plan
    from vigil.safety import audit as audit_module
    from vigil.safety.audit import AuditFailed
    from vigil.store import open_store as opened

    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("VIGIL_DATABASE_URL", raising=False)
    ws = tmp_path / "ws"
    ws.mkdir()
    cli_env = {"VIGIL_CONFIG_DIR": str(tmp_path / "config")}
    assert vigil("keys", "init", cwd=ws, env=cli_env).returncode == 0
    made = vigil(
        "grant",
        "create",
        "--project",
        "shop",
        "--env",
        "dev",
        "--allow",
        "deploy",
        "--expires-in",
        "1h",
        cwd=ws,
        env=cli_env,
    )
    assert made.returncode == 0, made.stderr
    grant_id = made.stdout.strip()
    config = load_config(ws)
    auditor = Auditor(config)
    auditor.record(action="first", decision="allow")
    before = auditor.path.read_bytes()

    real_write = os.write

    def short_write(fd: int, data: bytes) -> int:
        return real_write(fd, data[: len(data) // 2])  # the disk filled up mid-line

    def no_space(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    for failing in (short_write, no_space):
        monkeypatch.setattr(audit_module.os, "write", failing)
        with pytest.raises(AuditFailed):
            auditor.record(action="deploy", decision="allow")
        monkeypatch.setattr(audit_module.os, "write", real_write)
        assert auditor.path.read_bytes() == before, "a torn or unacknowledged entry was left"

    # The engine's authority check turns a failed audit write into a refusal.
    from vigil.engine.authority import Authority

    plan = Plan.model_validate(NEEDS_GRANT)
    with opened(config.database_url) as store:
        authority = Authority(config, store, plan, "r1", grant_id=grant_id, auditor=auditor)
        task = plan.phases[0].tasks[0]
        assert authority.authorize(task).allowed
        before = auditor.path.read_bytes()
        monkeypatch.setattr(audit_module.os, "write", no_space)
        decision = authority.authorize(task)
        monkeypatch.setattr(audit_module.os, "write", real_write)
    assert not decision.allowed and decision.code == AuditFailed.code
    assert auditor.path.read_bytes() == before


def test_a_failing_fsync_is_undone_and_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vigil.safety import audit as audit_module
    from vigil.safety.audit import AuditLog

    log = AuditLog(tmp_path / "audit" / "log.jsonl")
    log.append(actor="a", action="x", decision="allow")
    before = log.path.read_bytes()

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(audit_module.os, "fsync", broken)
    with pytest.raises(OSError):
        log.append(actor="a", action="y", decision="allow")
    assert log.path.read_bytes() == before
