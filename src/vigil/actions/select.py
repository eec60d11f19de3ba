"""Which action an attempt performs, from the task's definition."""

from __future__ import annotations

from vigil.actions.base import Action
from vigil.actions.run import RunAction
from vigil.plan.models import Task


def action_for(task: Task, command: str) -> Action:
    """The action an attempt of ``task`` performs (``command``: ``main`` or ``fallback``)."""
    if command == "fallback" and task.fallback:
        return RunAction(task.fallback)
    script = getattr(task, "run", None)
    if script:
        return RunAction(script)
    raise ValueError(f"task {task.id} has no action")
