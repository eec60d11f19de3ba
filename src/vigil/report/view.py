"""A run as data: the JSON shape ``vigil status --format json`` prints and the report reads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vigil.engine.replay import INTERRUPTED, load_state, resume_command, shown_state
from vigil.layout import iso

if TYPE_CHECKING:
    from vigil.engine.state import RunState
    from vigil.store import RunRecord, RunStore


def run_row(store: RunStore, record: RunRecord) -> dict[str, Any]:
    """One line of ``vigil runs`` (text and JSON) and of the dashboard's runs list."""
    shown = shown_state(store, record)
    return {
        "id": record.id,
        "plan": record.plan_name,
        "project": record.project,
        "state": shown,
        "created_at": iso(record.created_at),
        "started_at": iso(record.started_at),
        "ended_at": iso(record.ended_at),
        "duration": (
            round(record.ended_at - record.started_at, 3)
            if record.ended_at is not None and record.started_at is not None
            else None
        ),
        "resume": resume_command(record.id) if shown == INTERRUPTED else None,
    }


__all__ = [
    "INTERRUPTED",
    "iso",
    "load_state",
    "resume_command",
    "run_row",
    "run_view",
    "shown_state",
]


def run_view(record: RunRecord, state: RunState) -> dict[str, Any]:
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
                "skipped_by_condition": ts.by_condition,
                "left_out": ts.left_out,
                "outputs": dict(ts.outputs),
                "needs_grant": ts.needs_grant,
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
        "resume": resume_command(record.id) if state_name == INTERRUPTED else None,
        "dry_run": state.dry_run,
        "inputs": dict(state.options.inputs),
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
        # Tasks whose commits clashed, with the `needs` that would order them.
        "conflicts": _conflicts(state),
    }


def _conflicts(state: RunState) -> list[dict[str, Any]]:
    # `vigil runs` and `vigil status` import this module and load neither the engine's
    # dry-run nor the workspace code: only a run that had a conflict needs them.
    if not any(
        a.data.get("code") == CONFLICT_CODE for ts in state.tasks.values() for a in ts.attempts
    ):
        return []
    from vigil.engine.dryrun import commit_conflicts

    return [c.to_dict() for c in commit_conflicts(state)]


CONFLICT_CODE = "VIGIL-CONFLICT"
"""``vigil.workspace.Conflict.code``, spelled here so that reading a run loads no
workspace code (``tests/test_cli_imports.py``; ``test_reports_at_seven`` checks they agree)."""
