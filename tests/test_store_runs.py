"""Runs, journals and halts behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import math
import threading
import uuid
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigil.errors import RunNotFound, StoreError
from vigil.store import Halt, NewRun, Store, open_store


def new_run(run_id: str = "r1", *, project: str = "proj", created_at: float = 1000.0) -> NewRun:
    return NewRun(
        id=run_id,
        plan_name="nightly",
        project=project,
        plan_hash="sha256:abc",
        plan_json='{"phases":[]}',
        plan_path="plan.yaml",
        workspace="/srv/ws",
        created_at=created_at,
        options={"dry_run": False, "labels": ["a", "é"]},
    )


def test_create_run_is_idempotent_and_never_overwrites(store: Store) -> None:
    first = new_run()
    assert store.create_run(first) is True
    store.append("r1", [("started", {})], at=1001.0, state="running", started_at=1001.0)

    again = replace(first, plan_name="other", options={"x": 1}, created_at=5.0)
    assert store.create_run(again) is False

    record = store.get_run("r1")
    assert record is not None
    assert (record.plan_name, record.options, record.created_at) == (
        "nightly",
        {"dry_run": False, "labels": ["a", "é"]},
        1000.0,
    )
    assert (record.state, record.last_seq, record.started_at) == ("running", 1, 1001.0)


def test_new_run_starts_pending_with_empty_journal(store: Store) -> None:
    store.create_run(new_run())
    record = store.get_run("r1")
    assert record is not None
    assert record.state == "pending"
    assert record.last_seq == 0
    assert record.updated_at == record.created_at == 1000.0
    assert record.started_at is None and record.ended_at is None
    assert store.events("r1") == []
    assert store.get_run("nope") is None


def test_list_runs_newest_first_with_filters(store: Store) -> None:
    for i, project in enumerate(["a", "b", "a", "b", "a"]):
        store.create_run(new_run(f"r{i}", project=project, created_at=100.0 + i))
    store.append("r1", [], at=200.0, state="running")
    store.append("r4", [], at=200.0, state="failed")
    # Same created_at as r2: the id breaks the tie so the order is total.
    store.create_run(new_run("r2b", project="a", created_at=102.0))

    assert [r.id for r in store.list_runs()] == ["r4", "r3", "r2b", "r2", "r1", "r0"]
    assert [r.id for r in store.list_runs(project="a")] == ["r4", "r2b", "r2", "r0"]
    assert [r.id for r in store.list_runs(states=["running", "failed"])] == ["r4", "r1"]
    assert [r.id for r in store.list_runs(project="a", states=["pending"])] == ["r2b", "r2", "r0"]
    assert [r.id for r in store.list_runs(limit=2)] == ["r4", "r3"]
    assert store.list_runs(states=[]) == []
    assert store.list_runs(project="nobody") == []
    with pytest.raises(ValueError):
        store.list_runs(limit=0)


def test_append_numbers_events_consecutively_and_updates_summary(store: Store) -> None:
    store.create_run(new_run())
    assert store.append("r1", [("a", {"n": 1}), ("b", {"n": 2}), ("c", {})], at=1.5) == 3
    assert store.append("r1", [("d", {})], at=2.5, state="running", started_at=2.0) == 4
    # No events: only the summary changes, and the seq stays where it was.
    assert store.append("r1", [], at=3.5, state="succeeded", ended_at=3.0) == 4

    events = store.events("r1")
    assert [(e.seq, e.kind, e.data, e.at) for e in events] == [
        (1, "a", {"n": 1}, 1.5),
        (2, "b", {"n": 2}, 1.5),
        (3, "c", {}, 1.5),
        (4, "d", {}, 2.5),
    ]
    record = store.get_run("r1")
    assert record is not None
    assert (record.state, record.started_at, record.ended_at) == ("succeeded", 2.0, 3.0)
    assert (record.updated_at, record.last_seq) == (3.5, 4)


def test_events_after_and_limit(store: Store) -> None:
    store.create_run(new_run())
    store.append("r1", [(f"k{i}", {"i": i}) for i in range(10)], at=1.0)
    assert [e.seq for e in store.events("r1", after=7)] == [8, 9, 10]
    assert [e.seq for e in store.events("r1", after=2, limit=3)] == [3, 4, 5]
    assert store.events("r1", after=10) == []
    assert store.events("unknown") == []


def test_journals_of_runs_are_separate(store: Store) -> None:
    store.create_run(new_run("r1"))
    store.create_run(new_run("r2"))
    store.append("r1", [("x", {})], at=1.0)
    store.append("r2", [("y", {}), ("z", {})], at=1.0)
    store.append("r1", [("x2", {})], at=1.0)
    assert [(e.seq, e.kind) for e in store.events("r1")] == [(1, "x"), (2, "x2")]
    assert [(e.seq, e.kind) for e in store.events("r2")] == [(1, "y"), (2, "z")]


def test_append_to_unknown_run_writes_nothing(store: Store) -> None:
    with pytest.raises(RunNotFound):
        store.append("ghost", [("x", {})], at=1.0)
    assert store.events("ghost") == []
    assert store.list_runs() == []


@pytest.mark.parametrize(
    ("events", "state"),
    [
        ([("ok", {}), ("bad", {"x": math.nan})], None),
        ([("ok", {}), ("bad", {"x": object()})], None),
        ([("ok", {})], "exploded"),
    ],
)
def test_rejected_append_changes_nothing(
    store: Store, events: list[tuple[str, dict[str, Any]]], state: str | None
) -> None:
    store.create_run(new_run())
    store.append("r1", [("first", {})], at=1.0)
    with pytest.raises((ValueError, TypeError)):
        store.append("r1", events, at=2.0, state=state)
    record = store.get_run("r1")
    assert record is not None
    assert (record.last_seq, record.updated_at, record.state) == (1, 1.0, "pending")
    assert [e.kind for e in store.events("r1")] == ["first"]


# Every code point, lone surrogates and NUL included: undecodable file names reach events.
any_text = st.text(st.characters(exclude_categories=()))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)


@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kind=st.text(
        st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
        min_size=1,
        max_size=100,
    ),
    data=st.dictionaries(any_text, json_values),
)
def test_event_data_round_trips_exactly(store: Store, kind: str, data: dict[str, Any]) -> None:
    run_id = uuid.uuid4().hex
    store.create_run(new_run(run_id))
    store.append(run_id, [(kind, data)], at=1.0)
    [event] = store.events(run_id)
    assert (event.kind, event.data) == (kind, data)


@pytest.mark.parametrize("kind", ["", "nul\x00byte", "k" * 101, "lone\ud800surrogate"])
def test_text_either_backend_would_refuse_is_refused_by_both(store: Store, kind: str) -> None:
    store.create_run(new_run())
    with pytest.raises(ValueError):
        store.append("r1", [("fine", {}), (kind, {})], at=1.0)
    with pytest.raises(ValueError):
        store.create_run(new_run("x" * 201))
    with pytest.raises(ValueError):
        store.set_halt("web", "why\x00", "me", 1.0)
    assert store.events("r1") == []
    assert [r.id for r in store.list_runs()] == ["r1"]
    assert store.halts() == []


def test_halts_set_replace_clear(store: Store) -> None:
    assert store.halts() == []
    store.set_halt("*", "incident 42", "alice", 10.0)
    store.set_halt("web", "bad deploy", "bob", 11.0)
    store.set_halt("web", "still bad", "carol", 12.0)
    assert store.halts() == [
        Halt("*", "incident 42", "alice", 10.0),
        Halt("web", "still bad", "carol", 12.0),
    ]
    assert store.clear_halt("web") is True
    assert store.clear_halt("web") is False
    assert store.halts() == [Halt("*", "incident 42", "alice", 10.0)]


def test_everything_survives_reopening(store_url: str) -> None:
    with open_store(store_url) as first:
        first.create_run(new_run())
        first.append("r1", [("a", {"k": "v"})], at=1.0, state="waiting")
        first.set_halt("p", "r", "a", 1.0)
    with open_store(store_url) as second:
        record = second.get_run("r1")
        assert record is not None and record.state == "waiting"
        assert [e.data for e in second.events("r1")] == [{"k": "v"}]
        assert second.halts() == [Halt("p", "r", "a", 1.0)]


def test_store_can_be_shared_by_threads(store: Store) -> None:
    store.create_run(new_run())
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(25):
                store.append("r1", [("t", {}), ("t", {})], at=1.0)
                store.events("r1", after=0, limit=5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [e.seq for e in store.events("r1")] == list(range(1, 201))


def test_closed_store_refuses_work(store_url: str) -> None:
    opened = open_store(store_url)
    opened.close()
    with pytest.raises(StoreError):
        opened.get_run("r1")
