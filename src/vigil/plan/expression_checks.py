"""Where a plan uses ``${{ ... }}`` expressions, and whether each use is allowed.

Checked when a plan is loaded (before its matrices are expanded), so a misspelt input,
a ``needs`` context of a task not needed, an operator from another language or an
expression pasted into a shell script is reported at its ``file:line:col`` before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from vigil.plan.expressions import (
    CONTEXTS,
    STATUS_FUNCTIONS,
    VIGIL_FACTS,
    condition_source,
    expressions_in,
    references,
    syntax_problem,
)
from vigil.plan.matrix import check_matrix, expansion_ids
from vigil.plan.models import Plan, Task
from vigil.plan.sourcemap import DataPath

EXPRESSION_IN_SCRIPT = "VIGIL-PLAN-EXPRESSION-IN-SCRIPT"
"""The code of a plan that pastes an expression into a shell script's text."""

SCRIPT_FIX = (
    'pass the value through the environment instead: add `env: {NAME: "${{ inputs.x }}"}` '
    'to the task and write "$NAME" (quoted) in the script; a value in a variable is data, '
    "while a value pasted into a script is code anyone who sets it can inject"
)


@dataclass(frozen=True)
class ExpressionProblem:
    """A mistake in an expression at a data path (``code`` set for a stable kind)."""

    path: DataPath
    cause: str
    fix: str
    code: str = ""


@dataclass(frozen=True)
class _Use:
    path: DataPath
    text: str
    what: str
    condition: bool = False


def _scripts(task: Task, path: DataPath) -> Iterator[tuple[DataPath, str, str]]:
    if task.run is not None:
        yield (*path, "run"), task.run, "run"
    if task.fallback is not None:
        yield (*path, "fallback"), task.fallback, "fallback"
    if task.rollback is not None:
        yield (*path, "rollback"), task.rollback, "rollback"
    if task.agent is not None and task.agent.command is not None:
        yield (*path, "agent", "command"), task.agent.command, "agent.command"
    for k, check in enumerate(task.checks):
        yield (*path, "validate", k), check.run, f"validate[{k}]"


def _uses(task: Task, path: DataPath) -> Iterator[_Use]:
    if task.if_ is not None:
        yield _Use((*path, "if"), task.if_, "if", condition=True)
    for name, value in task.env.items():
        yield _Use((*path, "env", name), value, f"env.{name}")
    for key in ("agent", "llm"):
        spec = getattr(task, key)
        if spec is None:
            continue
        if spec.prompt is not None:
            yield _Use((*path, key, "prompt"), spec.prompt, f"{key}.prompt")
        system = getattr(spec, "system", None)
        if system is not None:
            yield _Use((*path, key, "system"), system, f"{key}.system")


def _sources(use: _Use) -> list[str]:
    if use.condition:
        return [condition_source(use.text)]
    return [source for _, source in expressions_in(use.text)]


@dataclass(frozen=True)
class _Scope:
    """What a task's expressions may read besides inputs, env and vigil."""

    needs: tuple[str, ...] | None = None
    matrix: tuple[str, ...] | None = None
    groups: Mapping[str, list[str]] = field(default_factory=dict)


def _matrix_keys(task: Task) -> tuple[str, ...] | None:
    if task.matrix is None:
        return None
    keys = dict.fromkeys(task.matrix.axes)
    for entry in task.matrix.include:
        keys.update(dict.fromkeys(entry))
    return tuple(keys)


def _need_problem(scope: _Scope, key: str, path: tuple[str, ...]) -> str | None:
    needs = scope.needs
    if needs is None:
        return "'needs' is known only inside a task"
    group = next((g for g, ids in scope.groups.items() if key in ids), None)
    if key in scope.groups and key in needs:
        first = scope.groups[key][0]
        return (
            f"'{key}' is a matrix of {len(scope.groups[key])} tasks: read one of them, "
            f"e.g. needs['{first}'].outputs.NAME"
        )
    if key not in needs and (group is None or group not in needs):
        return f"'{key}' is not in this task's needs: add it to 'needs:' to read its results"
    if len(path) > 2 and path[2] not in ("outputs", "result"):
        return f"needs.{key}.{path[2]}: write needs.{key}.outputs.NAME or needs.{key}.result"
    return None


def _reference_problem(
    plan: Plan, scope: _Scope, path: tuple[str, ...], condition: bool
) -> str | None:
    name = path[0]
    if name in STATUS_FUNCTIONS:
        return None if condition else f"{name}() can be used only in 'if:'"
    if name not in CONTEXTS:
        return f"'{name}' is not a context: use one of {', '.join(CONTEXTS)}"
    if name == "matrix" and scope.matrix is None:
        return "'matrix' is known only in a task with a 'matrix:'"
    if len(path) < 2:
        return None
    key = path[1]
    if name == "inputs" and key not in plan.inputs:
        declared = ", ".join(plan.inputs) or "none"
        return f"input '{key}' is not declared under 'inputs:' (declared: {declared})"
    if name == "needs":
        return _need_problem(scope, key, path)
    if name == "matrix" and scope.matrix is not None and key not in scope.matrix:
        return f"matrix.{key} is not a key of this task's matrix (keys: {', '.join(scope.matrix)})"
    if name == "vigil" and key not in VIGIL_FACTS:
        return f"vigil.{key} is unknown: use one of {', '.join(VIGIL_FACTS)}"
    return None


def _check_use(plan: Plan, use: _Use, scope: _Scope) -> list[ExpressionProblem]:
    problems: list[ExpressionProblem] = []
    for source in _sources(use):
        wrong = syntax_problem(source)
        if wrong is not None:
            problems.append(
                ExpressionProblem(
                    use.path,
                    f"{use.what}: ${{{{ {source} }}}} is not a valid expression: {wrong}",
                    "see 'Expressions' in docs/plans.md",
                )
            )
            continue
        for ref in references(source):
            cause = _reference_problem(plan, scope, ref.path, use.condition)
            if cause is not None:
                problems.append(
                    ExpressionProblem(
                        use.path, f"{use.what}: {cause}", "see 'Expressions' in docs/plans.md"
                    )
                )
    return problems


def check_expressions(plan: Plan) -> list[ExpressionProblem]:
    """Every problem with the plan's expressions, each at the data path it is written at."""
    problems: list[ExpressionProblem] = []
    groups = {
        t.id: expansion_ids(t)
        for i, p in enumerate(plan.phases)
        for j, t in enumerate(p.tasks)
        if t.matrix is not None and not check_matrix(t, ("phases", i, "tasks", j))
    }
    outside = _Scope()
    for name, value in plan.env.items():
        problems += _check_use(plan, _Use(("env", name), value, f"env.{name}"), outside)
    for i, phase in enumerate(plan.phases):
        phase_path: DataPath = ("phases", i)
        if phase.if_ is not None:
            use = _Use((*phase_path, "if"), phase.if_, "if", condition=True)
            problems += _check_use(plan, use, outside)
        for k, check in enumerate(phase.checks):
            if "${{" in check.run:
                problems.append(_in_script((*phase_path, "validate", k), f"validate[{k}]"))
        for j, task in enumerate(phase.tasks):
            path: DataPath = (*phase_path, "tasks", j)
            for script_path, text, what in _scripts(task, path):
                if "${{" in text:
                    problems.append(_in_script(script_path, what))
            scope = _Scope(task.needs, _matrix_keys(task), groups)
            for use in _uses(task, path):
                problems += _check_use(plan, use, scope)
    return problems


def _in_script(path: DataPath, what: str) -> ExpressionProblem:
    return ExpressionProblem(
        path,
        f"{what} holds an expression '${{{{ ... }}}}'; expressions are never pasted into a "
        f"script [{EXPRESSION_IN_SCRIPT}]",
        SCRIPT_FIX,
        EXPRESSION_IN_SCRIPT,
    )


__all__ = ["EXPRESSION_IN_SCRIPT", "SCRIPT_FIX", "ExpressionProblem", "check_expressions"]
