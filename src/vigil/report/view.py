"""A run as data: the JSON shape ``vigil status --format json`` prints and the report reads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from vigil.engine import events as ev
from vigil.errors import RunNotFound

if TYPE_CHECKING:
    # Imported by load_state: `vigil runs` needs iso() and none of the plan models.
    from vigil.engine.state import RunState


def iso(ts: float | None) -> str | None:
    """Epoch seconds as an ISO 8601 UTC timestamp (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def load_state(store: Any, run_id: str) -> tuple[Any, RunState]:
    """The run's record and its state folded from the journal."""
    from vigil.engine.state import RunState
    from vigil.plan.models import Plan

    record = store.get_run(run_id)
    if record is None:
        raise RunNotFound(f"no run {run_id!r} in {store.url}")
    plan = Plan.model_validate_json(record.plan_json)
    journal = [ev.Event(s.kind, s.data, s.at, s.seq) for s in store.events(run_id)]
    return record, RunState.replay(run_id, plan, journal, dict(record.options))


def run_view(record: Any, state: RunState) -> dict[str, Any]:
    """The run and every task with its attempts, as JSON-ready data."""
    tasks = []
    for ts in state.tasks.values():
        tasks.append(
            {
                "id": ts.task.id,
                "name": ts.task.title,
                "phase": ts.phase,
                "state": ts.state,
                "critical": ts.task.on_failure == "stop",
                "degraded": ts.degraded,
                "reason": ts.reason or None,
                "blocked_by": ts.blocked_by,
                "attempts": [
                    {
                        "number": a.number,
                        "command": a.command,
                        "state": a.state,
                        "exit_code": a.exit_code,
                        "started_at": iso(a.started_at),
                        "ended_at": iso(a.ended_at),
                        "duration": (
                            round(a.ended_at - a.started_at, 3) if a.ended_at is not None else None
                        ),
                        "reason": a.reason or None,
                        "changes": len(a.changeset["entries"]) if a.changeset else 0,
                        "committed": a.committed,
                        **a.data,
                    }
                    for a in ts.attempts
                ],
            }
        )
    state_name = state.finished or record.state
    return {
        "id": record.id,
        "plan": record.plan_name,
        "project": record.project,
        "plan_path": record.plan_path,
        "plan_hash": record.plan_hash,
        "workspace": record.workspace,
        "state": state_name,
        "dry_run": state.dry_run,
        "created_at": iso(record.created_at),
        "started_at": iso(state.started_at or record.started_at),
        "ended_at": iso(state.ended_at),
        "duration": (
            round(state.ended_at - state.started_at, 3)
            if state.ended_at is not None and state.started_at is not None
            else None
        ),
        "phases": [
            {"id": p.id, "state": p.state, "reason": p.reason or None} for p in state.phases
        ],
        "tasks": tasks,
    }
