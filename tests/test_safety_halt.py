"""Halt: a halted project (or all of them) is refused, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from vigil.safety.halt import Halted, check_not_halted, halt, unhalt
from vigil.store import Store


def test_halt_stops_one_project_and_unhalt_lifts_it(store: Store) -> None:
    check_not_halted(store, "shop")
    halt(store, "shop", "bad deploy", "ana@host")
    with pytest.raises(Halted) as info:
        check_not_halted(store, "shop")
    assert "bad deploy" in info.value.cause and "ana@host" in info.value.cause
    check_not_halted(store, "blog")
    assert unhalt(store, "shop") is True
    assert unhalt(store, "shop") is False
    check_not_halted(store, "shop")


def test_global_halt_stops_every_project(store: Store) -> None:
    halt(store, "*", "incident 42", "oncall")
    for project in ("shop", "blog"):
        with pytest.raises(Halted):
            check_not_halted(store, project)
    unhalt(store, "*")
    check_not_halted(store, "shop")


def test_halt_is_seen_by_another_connection(store_url: str, store: Store) -> None:
    from vigil.store import open_store

    other = open_store(store_url)
    try:
        halt(store, "shop", "stop", "ana")
        with pytest.raises(Halted):
            check_not_halted(other, "shop")
    finally:
        other.close()


def test_halt_needs_a_reason(store: Store) -> None:
    with pytest.raises(Halted):
        halt(store, "shop", "   ", "ana")
    check_not_halted(store, "shop")
