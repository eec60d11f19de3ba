"""The journal on disk stays as older runs wrote it: kinds, payloads and run options.

Kinds are an enum and payloads have types in the code; the text in the store must not
change with them, or runs started by an older vigil would no longer replay.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from enginetools import Harness, make_plan
from journaltools import payload_problems
from vigil.engine import events as ev
from vigil.engine.attest import JournalSigner
from vigil.engine.changes import rollback_run
from vigil.engine.options import RunOptions
from vigil.engine.runs import resume_run, seal_run
from vigil.engine.state import RunState
from vigil.safety.decisions import decision_key
from vigil.store import NewRun, Store

# The text each kind has in journals written since the kind was introduced.
KINDS_ON_DISK = {
    "RUN_CREATED": "run.created",
    "DRIVER_STARTED": "driver.started",
    "DRIVER_STOPPED": "driver.stopped",
    "ATTEMPT_STARTED": "attempt.started",
    "ATTEMPT_FINISHED": "attempt.finished",
    "TASK_FINISHED": "task.finished",
    "TASK_SKIPPED": "task.skipped",
    "PHASE_CHECK_STARTED": "phase.check.started",
    "PHASE_FINISHED": "phase.finished",
    "CANCEL_REQUESTED": "run.cancel_requested",
    "RUN_FINISHED": "run.finished",
    "CHANGESET_COMMITTING": "changeset.committing",
    "CHANGESET_COMMITTED": "changeset.committed",
    "CHANGESET_FAILED": "changeset.failed",
    "CHANGESET_HELD": "changeset.held",
    "REVIEW_DECIDED": "review.decided",
    "ROLLBACK_DONE": "rollback.done",
    "ESCALATION_OPENED": "escalation.opened",
    "ESCALATION_ANSWERED": "escalation.answered",
    "DECISION_ACCEPTED": "decision.accepted",
    "DECISION_REFUSED": "decision.refused",
}


def raw_events(store_url: str, run_id: str) -> list[tuple[str, str]]:
    """The kind and data columns exactly as the database holds them."""
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT kind, data FROM events WHERE run_id = :r ORDER BY seq"),
                {"r": run_id},
            )
            return [(str(kind), str(data)) for kind, data in rows]
    finally:
        engine.dispose()


def new_run(store: Store, run_id: str = "r1") -> None:
    assert store.create_run(NewRun(run_id, "p", "proj", "h", "{}", "p.yaml", "/w", 1.0))


def test_every_kind_keeps_its_text_and_its_old_name() -> None:
    assert {kind.name: kind.value for kind in ev.Kind} == KINDS_ON_DISK
    for name, text in KINDS_ON_DISK.items():
        assert getattr(ev, name) is ev.Kind(text)
        assert getattr(ev, name) == text


def test_a_kind_from_the_enum_is_stored_as_its_text(store: Store, store_url: str) -> None:
    new_run(store)
    store.append("r1", [ev.attempt_started("build", 1, "main")], at=2.0)
    assert raw_events(store_url, "r1") == [
        ("attempt.started", '{"task":"build","attempt":1,"command":"main"}')
    ]
    [stored] = store.events("r1")
    assert type(stored.kind) is str and stored.kind == ev.ATTEMPT_STARTED


def test_the_shape_checker_refuses_what_does_not_fit() -> None:
    kind, data = ev.attempt_started("t", 1, "main")
    assert payload_problems(kind, data) == []
    assert payload_problems(kind, {"task": "t", "attempt": "1", "command": "main"}) != []
    assert payload_problems(kind, {"task": "t", "command": "main"}) != []
    assert payload_problems(kind, {**data, "surprise": 1}) != []
    assert payload_problems(ev.TASK_FINISHED, {"task": "t", "state": "failed"}) != []


CONTINUE = {"on_failure": "continue"}


def test_every_event_a_run_journals_has_the_shape_of_its_kind(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_DATABASE_URL", store_url)
    hb = Harness(tmp_path / "workspace", store_url)
    plan = make_plan(
        [
            {
                "id": "build",
                "validate": ["true"],
                "tasks": [
                    {"id": "write", "run": "echo hi > out.txt"},
                    {"id": "flaky", "run": "exit 3", "fallback": "true"},
                    {"id": "broken", "run": "exit 1"} | CONTINUE,
                    {"id": "after", "run": "true", "needs": ["broken"]} | CONTINUE,
                    {
                        "id": "checked",
                        "run": "true",
                        "checks": ["exit 2"],
                        "on_failure": "continue",
                    },
                ],
            },
            {"id": "later", "tasks": [{"id": "last", "run": "true"}]},
        ]
    )
    try:
        outcome = hb.run(plan, run_id="shapes")
        rollback_run(hb.config, hb.store, "shapes", task="write")
        journal = hb.journal("shapes")
    finally:
        hb.store.close()
    assert outcome.state == "succeeded"
    kinds = {e.kind for e in journal}
    assert {ev.CHANGESET_COMMITTED, ev.TASK_SKIPPED, ev.PHASE_FINISHED, ev.ROLLBACK_DONE} <= kinds
    assert [p for e in journal for p in payload_problems(e.kind, e.data)] == []


def test_the_core_folds_a_journal_written_before_payloads_had_types() -> None:
    """Payloads as an older vigil wrote them (keys since added are absent) still fold."""
    plan = make_plan([{"id": "main", "tasks": [{"id": "a", "run": "true"}]}])
    journal = [
        ev.Event("run.created", {}, 1.0, 1),
        ev.Event("driver.started", {}, 1.0, 2),
        ev.Event("attempt.started", {"task": "a", "attempt": 1, "command": "main"}, 1.0, 3),
        ev.Event(
            "attempt.finished",
            {"task": "a", "attempt": 1, "outcome": "failed", "exit_code": 1, "reason": "x"},
            2.0,
            4,
        ),
        ev.Event("attempt.started", {"task": "a", "attempt": 2, "command": "main"}, 3.0, 5),
        ev.Event(
            "attempt.finished",
            {"task": "a", "attempt": 2, "outcome": "succeeded", "exit_code": 0, "reason": ""},
            4.0,
            6,
        ),
        ev.Event("task.finished", {"task": "a", "state": "succeeded"}, 4.0, 7),
        ev.Event("phase.finished", {"phase": "main", "passed": True}, 4.0, 8),
        ev.Event("run.cancel_requested", {}, 4.0, 9),
        ev.Event("run.finished", {"state": "succeeded"}, 4.0, 10),
    ]
    state = RunState.replay("old", plan, journal)
    assert state.finished == "succeeded"
    assert state.tasks["a"].state == "succeeded" and state.tasks["a"].reason == ""
    assert [a.state for a in state.tasks["a"].attempts] == ["failed", "succeeded"]
    assert state.cancel_reason == "cancelled"


def test_run_options_are_recorded_as_before() -> None:
    options = RunOptions(max_parallel=3, review=True, grant="g-1", prefetch_prompts=2)
    recorded = options.to_dict()
    assert list(recorded.items()) == [
        ("max_parallel", 3),
        ("dry_run", False),
        ("review", True),
        ("grant", "g-1"),
        ("prefetch_prompts", 2),
        ("allow_stale_prompts", False),
    ]
    assert RunOptions.from_dict(json.loads(json.dumps(recorded))) == options
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.review = False  # type: ignore[misc]


def test_run_options_of_older_and_newer_runs_are_read() -> None:
    assert RunOptions.from_dict({}) == RunOptions()
    newer = {"max_parallel": 2, "dry_run": True, "labels": ["a"], "colour": "blue"}
    assert RunOptions.from_dict(newer) == RunOptions(max_parallel=2, dry_run=True)


def test_a_run_recorded_with_unknown_options_resumes(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_DATABASE_URL", store_url)
    hb = Harness(tmp_path / "workspace", store_url)
    plan = make_plan([{"id": "main", "tasks": [{"id": "a", "run": "echo hi > a.txt"}]}])
    try:
        assert hb.store.create_run(
            NewRun(
                "old",
                plan.name,
                plan.project,
                plan.content_hash(),
                plan.canonical_json(),
                "plan.yaml",
                str(hb.workspace),
                1.0,
                options={
                    "max_parallel": 1,
                    "review": True,
                    "colour": "blue",
                    # A newer vigil's key is not among those the seal covers.
                    "seal": seal_run(
                        hb.config, "old", plan, RunOptions(max_parallel=1, review=True)
                    ),
                },
            )
        )
        JournalSigner("old", decision_key()).append(
            hb.store, [ev.run_created(plan.content_hash(), 1)], at=1.0, state="running"
        )
        outcome = resume_run(hb.config, hb.store, "old")
        assert outcome.state == "waiting"  # review: True was read from the record
        assert hb.task("old", "a")["state"] == "waiting"
    finally:
        hb.store.close()
