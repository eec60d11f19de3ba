"""What expressions see during a run, and whether a task's or a phase's ``if:`` holds.

Pure: everything here is computed from the run's state, which is a fold of its journal
(plus the inputs recorded, and signed, with the run). A condition is evaluated again
after a crash on the same journal and gives the same verdict, so only a *false*
condition needs an event (the task is journalled as skipped); a true one just lets the
task start as any other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vigil.plan.expressions import condition_source, evaluate, substitute, uses_status
from vigil.plan.models import Task

if TYPE_CHECKING:
    from vigil.engine.state import RunState

RESULT_WORDS = {
    "succeeded": "success",
    "failed": "failure",
    "skipped": "skipped",
    "cancelled": "cancelled",
}
"""A task's state as ``needs.TASK.result`` says it (the words of GitHub Actions)."""


def waits_for_all(task: Task) -> bool:
    """Whether ``task`` starts once its needs have *ended* (however they ended), because
    its ``if:`` says itself when it runs (``failure()``, ``always()``, ``cancelled()``).
    Every other task starts only after its needs succeeded."""
    return task.if_ is not None and uses_status(condition_source(task.if_))


def plan_env(state: RunState) -> dict[str, str]:
    """The plan's ``env:``, expressions evaluated (they see inputs and the run's facts)."""
    context = _base(state)
    return {k: substitute(v, context) for k, v in state.plan.env.items()}


def task_env(state: RunState, task: Task) -> tuple[dict[str, str], dict[str, str]]:
    """The plan's and the task's ``env:``, expressions evaluated; the task's values see
    the plan's in ``env``. Values are data: they reach the step as variables only."""
    outer = plan_env(state)
    context = {**_base(state), **_own(state, task), "env": outer}
    return outer, {k: substitute(v, context) for k, v in task.env.items()}


def task_context(state: RunState, task: Task) -> dict[str, Any]:
    """What a task's expressions see (``env`` includes the task's own values)."""
    outer, own = task_env(state, task)
    return {**_base(state), **_own(state, task), "env": {**outer, **own}}


def _own(state: RunState, task: Task) -> dict[str, Any]:
    """The contexts of one task: what it needs, and its matrix values if it is an
    expansion of a matrix."""
    matrix = dict(task.expansion.values) if task.expansion is not None else {}
    return {"needs": _needs(state, task), "matrix": matrix}


def _base(state: RunState) -> dict[str, Any]:
    return {
        "inputs": dict(state.options.inputs),
        "matrix": {},
        "env": {},
        "needs": {},
        "vigil": {
            "run_id": state.run_id,
            "plan": state.plan.name,
            "project": state.plan.project,
        },
    }


def _needs(state: RunState, task: Task) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for need in task.needs:
        ts = state.tasks.get(need)
        if ts is None:
            continue
        found[need] = {
            "result": RESULT_WORDS.get(ts.state, ts.state),
            "outputs": dict(ts.outputs),
        }
    return found


def _ancestors(state: RunState, task: Task) -> set[str]:
    seen: set[str] = set()
    stack = list(task.needs)
    while stack:
        need = stack.pop()
        if need in seen or need not in state.tasks:
            continue
        seen.add(need)
        stack.extend(state.tasks[need].task.needs)
    return seen


def _status(
    success: Callable[[], bool], failure: Callable[[], bool], state: RunState
) -> dict[str, Callable[[], bool]]:
    return {
        "success": success,
        "failure": failure,
        "always": lambda: True,
        "cancelled": lambda: state.cancel_requested,
    }


def task_condition(state: RunState, task: Task) -> bool:
    """Whether ``task``'s ``if:`` holds now; ExpressionFailed if it cannot be evaluated.

    ``success()``: every task it needs succeeded and the run was not cancelled;
    ``failure()``: a task it needs, directly or through others, failed. A condition
    without a status function holds only with ``success()``, as in GitHub Actions.
    """
    assert task.if_ is not None
    source = condition_source(task.if_)

    def success() -> bool:
        return not state.cancel_requested and all(
            state.tasks[n].state == "succeeded" for n in task.needs if n in state.tasks
        )

    def failure() -> bool:
        return any(state.tasks[n].state == "failed" for n in _ancestors(state, task))

    context = {**task_context(state, task), **_status(success, failure, state)}
    if not uses_status(source) and not success():
        return False
    return bool(evaluate(source, context))


def phase_condition(state: RunState, index: int) -> bool:
    """Whether the ``if:`` of the phase at ``index`` holds now: ``success()`` means no
    earlier phase failed, ``failure()`` that one did."""
    phase = state.plan.phases[index]
    assert phase.if_ is not None
    source = condition_source(phase.if_)

    def failure() -> bool:
        return any(p.state == "failed" for p in state.phases[:index])

    def success() -> bool:
        return not state.cancel_requested and not failure()

    context = {**_base(state), "env": plan_env(state), **_status(success, failure, state)}
    if not uses_status(source) and not success():
        return False
    return bool(evaluate(source, context))


def phase_waits_for_all(state: RunState, index: int) -> bool:
    """Whether the phase at ``index`` opens even after an earlier phase failed."""
    phase = state.plan.phases[index]
    return phase.if_ is not None and uses_status(condition_source(phase.if_))


__all__ = [
    "RESULT_WORDS",
    "phase_condition",
    "phase_waits_for_all",
    "plan_env",
    "task_condition",
    "task_context",
    "task_env",
    "waits_for_all",
]
