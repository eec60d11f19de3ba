"""Halt: a halted project (or all of them) is refused, on SQLite and PostgreSQL; a halt
and a lift each go on the audit record in the same library call."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.config import load_config
from vigil.engine.audit import Auditor
from vigil.safety.audit import audit_path, read_entries
from vigil.safety.halt import Halted, check_not_halted, halt, unhalt
from vigil.store import Store


@pytest.fixture
def audit(tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> Auditor:
    """The audit log of a fresh workspace, sealed into the store under test."""
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(tmp_path / "config"))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    return Auditor(load_config(workspace), store=store)


def entries(audit: Auditor) -> list[tuple[str, str, str]]:
    found = read_entries(audit_path(audit.config.state_dir))
    return [(e["action"], e["actor"], e["reason"]) for e in found]


def test_halt_stops_one_project_and_unhalt_lifts_it(store: Store, audit: Auditor) -> None:
    check_not_halted(store, "shop")
    halt(store, "shop", "bad deploy", "ana@host", audit=audit)
    with pytest.raises(Halted) as info:
        check_not_halted(store, "shop")
    assert "bad deploy" in info.value.cause and "ana@host" in info.value.cause
    check_not_halted(store, "blog")
    assert unhalt(store, "shop", audit=audit, actor="bo") is True
    assert unhalt(store, "shop", audit=audit, actor="bo") is False
    check_not_halted(store, "shop")


def test_halt_and_lift_are_each_one_audit_entry(store: Store, audit: Auditor) -> None:
    halt(store, "shop", "bad deploy", "ana@host", audit=audit)
    assert entries(audit) == [("halt", "ana@host", "shop: bad deploy")]
    unhalt(store, "shop", audit=audit, actor="bo")
    unhalt(store, "shop", audit=audit, actor="bo")  # nothing left to lift: no entry
    assert entries(audit)[1:] == [("unhalt", "bo", "shop")]
    head = store.audit_head(str(audit.path.resolve()))
    assert head is not None and head.size == 2  # sealed into the store as well


def test_global_halt_stops_every_project(store: Store, audit: Auditor) -> None:
    halt(store, "*", "incident 42", "oncall", audit=audit)
    for project in ("shop", "blog"):
        with pytest.raises(Halted):
            check_not_halted(store, project)
    unhalt(store, "*", audit=audit)
    check_not_halted(store, "shop")


def test_halt_is_seen_by_another_connection(store_url: str, store: Store, audit: Auditor) -> None:
    from vigil.store import open_store

    other = open_store(store_url)
    try:
        halt(store, "shop", "stop", "ana", audit=audit)
        with pytest.raises(Halted):
            check_not_halted(other, "shop")
    finally:
        other.close()


def test_halt_needs_a_reason(store: Store, audit: Auditor) -> None:
    with pytest.raises(Halted):
        halt(store, "shop", "   ", "ana", audit=audit)
    check_not_halted(store, "shop")
    assert entries(audit) == []
