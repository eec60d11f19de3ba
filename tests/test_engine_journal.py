"""The journal on disk stays as older runs wrote it: kinds, payloads and run options.

Kinds are an enum and payloads have types in the code; the text in the store must not
change with them, or runs started by an older vigil would no longer replay.
"""

from __future__ import annotations

import sqlalchemy as sa

from vigil.engine import events as ev
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
