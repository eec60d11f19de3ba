"""A stored run's state, folded from its journal."""

from __future__ import annotations

from typing import Any

from vigil.engine import events as ev
from vigil.engine.state import RunState
from vigil.errors import RunNotFound
from vigil.plan.models import Plan


def load_state(store: Any, run_id: str) -> tuple[Any, RunState]:
    """The run's record and its state folded from the journal."""
    record = store.get_run(run_id)
    if record is None:
        raise RunNotFound(f"no run {run_id!r} in {store.url}")
    plan = Plan.model_validate_json(record.plan_json)
    journal = [ev.Event(s.kind, s.data, s.at, s.seq) for s in store.events(run_id)]
    return record, RunState.replay(run_id, plan, journal, dict(record.options))
