"""Plain plan data to a :class:`Plan`, or every problem with it at its ``file:line:col``.

Both plan formats end here, so a mistake reads the same whether it was made in YAML or in
a Markdown runbook. Pydantic's errors speak in data paths and in its own words; this
module turns each into one line of cause and one concrete fix.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from vigil.plan.expression_checks import ExpressionProblem, check_expressions
from vigil.plan.graph import check_graph, shape_of_data
from vigil.plan.ids import slug
from vigil.plan.inputs import check_input_declarations
from vigil.plan.matrix import MatrixProblem, expand_plan, matrix_problems
from vigil.plan.models import Plan
from vigil.plan.problems import PlanProblem
from vigil.plan.sourcemap import DataPath, SourceMap, resolve

_DURATION_FIX = "write a number of seconds or a duration like '90s', '10m', '1h30m', '250ms'"
_ID_FIX = "use letters, digits, '_', '.', '-', starting with a letter or digit, e.g. '{}'"

FIELD_FIXES = {
    "run": "write the shell command as text; use 'run: |' for a script of several lines",
    "needs": "write a task id or a list of ids, e.g. needs: [build, test]",
    "validate": "write a command, or a list of commands or {run: ..., name: ...} items",
    "checks": "write a command, or a list of commands or {run: ..., name: ...} items",
    "env": 'write KEY: "value" pairs; quote numbers and yes/no, e.g. PORT: "8080"',
    "timeout": _DURATION_FIX,
    "initial": _DURATION_FIX,
    "max": _DURATION_FIX,
    "retry": "write e.g. retry: {attempts: 3, initial: 5s}",
    "attempts": "write a whole number of attempts from 1 to 100",
    "factor": "write a number from 1 to 100, e.g. 2",
    "jitter": "write a fraction from 0 to 1, e.g. 0.1",
    "on": "write 'all' or a list of 'timeout', 'failure' and exit codes, e.g. [timeout, 75]",
    "on_failure": "write 'stop' (a failure fails the run) or 'continue'",
    "workdir": "write a directory relative to the workspace, e.g. 'services/api'",
    "fallback": "write the shell command to run once retries are spent",
    "name": "write a short title as text",
    "description": "write the description as text",
    "project": "write the project name, e.g. 'shop-api'",
    "phases": "list the phases under 'phases:' as '- id: ...' items, each with tasks",
    "tasks": "list the tasks under 'tasks:' as '- id: ...' items, each with an action "
    "(run:, agent:, llm: or approval:)",
    "defaults": "write e.g. defaults: {timeout: 10m, retry: {attempts: 2}}",
    "inputs": "declare each input as NAME: {type: string, number, boolean or choice, "
    "default: ..., required: true}; a choice lists its 'options:'",
    "options": "list the allowed values of a choice, e.g. options: [staging, prod]",
    "required": "write true or false",
    "if": "write a condition, e.g. if: failure(), or if: ${{ inputs.deploy }}",
    "matrix": 'give each key a list of values, e.g. matrix: {python: ["3.11", "3.12"], '
    "db: [pg, sqlite]}; also include:, exclude:, max_parallel: N, fail_fast: true",
    "include": "list combinations as mappings, e.g. include: [{python: '3.13', db: pg}]",
    "exclude": "list combinations as mappings, e.g. exclude: [{python: '3.11', db: sqlite}]",
    "max_parallel": "write a whole number of expansions that may run at once, e.g. 2",
    "fail_fast": "write true or false",
    "expansion": "write 'matrix:'; vigil expands it into one task per combination",
}

_MODEL_NAMES = {
    "Plan": "the plan",
    "Phase": "phase",
    "Task": "task",
    "RetryPolicy": "retry",
    "Check": "check",
    "Defaults": "defaults",
    "Matrix": "matrix",
}


def _models_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _models_in(arg)
        if found is not None:
            return found
    return None


def _fields(model: type[BaseModel]) -> dict[str, str]:
    """The keys a model accepts as written in a plan (alias first) -> field name."""
    return {(info.alias or name): name for name, info in model.model_fields.items()}


def model_at(path: DataPath) -> type[BaseModel] | None:
    """The model that validates the mapping at ``path`` of plan data."""
    model: type[BaseModel] | None = Plan
    for part in path:
        if isinstance(part, int):
            continue
        if model is None:
            return None
        accepted = _fields(model)
        name = accepted.get(part, part if part in model.model_fields else None)
        if name is None:
            return None
        model = _models_in(model.model_fields[name].annotation)
    return model


def allowed_keys(model: type[BaseModel]) -> list[str]:
    """The keys ``model`` accepts, as a plan writes them."""
    return list(_fields(model))


def _owner(data: object, path: DataPath) -> str:
    """How a person would name the thing at ``path``: ``task 'build'``, ``phase 2``."""
    label = "the plan"
    node = data
    for k, part in enumerate(path):
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            break
        if k >= 1 and path[k - 1] in ("phases", "tasks") and isinstance(part, int):
            kind = "phase" if path[k - 1] == "phases" else "task"
            ident = node.get("id") if isinstance(node, Mapping) else None
            label = f"{kind} '{ident}'" if isinstance(ident, str) else f"{kind} #{part + 1}"
    return label


def _dotted(path: DataPath) -> str:
    """The key chain below the owning phase or task: ``retry.on``, ``validate[2]``."""
    tail: list[str] = []
    for k, part in enumerate(path):
        if (isinstance(part, int) and k >= 1 and path[k - 1] in ("phases", "tasks")) or (
            part in ("phases", "tasks") and k + 1 < len(path) and isinstance(path[k + 1], int)
        ):
            tail = []
        elif isinstance(part, int):
            tail.append(f"[{part}]")
        else:
            tail.append(("." if tail else "") + part)
    return "".join(tail)


def _describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, str):
        return f"the text {value!r}" if len(value) < 40 else "text"
    return type(value).__name__


def _value_at(data: object, path: DataPath) -> object:
    node = data
    for part in path:
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            node = node[part]
    return node


def _field_of(path: DataPath) -> str:
    """The plan field a path ends in: ``env`` for ``("env", "PORT")``."""
    for k in range(len(path) - 1, -1, -1):
        part = path[k]
        if isinstance(part, str):
            model = model_at(path[:k])
            if model is not None and (part in model.model_fields or part in _fields(model)):
                return part
    return ""


def _message(error: ErrorDetails, value: object, field: str) -> str:
    kind = error["type"]
    got = _describe(value)
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    if kind == "string_type":
        return f"must be text, not {got}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number, not {got}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, not {got}"
    if kind in ("list_type", "tuple_type"):
        return f"must be a list, not {got}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping of keys to values, not {got}"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', 'one of the allowed values')}, not {got}"
    if kind == "string_pattern_mismatch" and field in ("id", "project"):
        return f"{value!r} is not a valid {'id' if field == 'id' else 'project name'}"
    if kind == "value_error":
        # The fix says how to write it; the cause keeps only what is wrong.
        return str(error["msg"]).removeprefix("Value error, ").split("; ")[0]
    if kind in ("string_too_short", "too_short") and not value:
        return "must not be empty"
    return str(error["msg"])[:1].lower() + str(error["msg"])[1:]


def _fix_for(field: str, kind: str, value: object) -> str:
    if kind == "string_pattern_mismatch" and field in ("id", "project"):
        return _ID_FIX.format(slug(str(value)))
    return FIELD_FIXES.get(field, "see the plan reference in docs/plans.md")


def _problems_from(
    exc: ValidationError, data: object, source_map: SourceMap, filename: str
) -> list[PlanProblem]:
    problems: list[PlanProblem] = []
    unions_seen: set[DataPath] = set()
    for error in exc.errors():
        loc = tuple(error["loc"])
        kind = error["type"]
        path, beyond = resolve(data, loc)
        value = _value_at(data, path)
        owner = _owner(data, path)
        if kind == "extra_forbidden":
            key = str(loc[-1])
            model = model_at(path[:-1])
            keys = allowed_keys(model) if model else []
            close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
            line, col = source_map.position(path, key=True)
            problems.append(
                PlanProblem(
                    filename,
                    line,
                    col,
                    f"unknown key '{key}' in {owner}"
                    + (f" at {_dotted(path[:-1])}" if _dotted(path[:-1]) else ""),
                    f"{hint}allowed keys: {', '.join(keys)}",
                )
            )
            continue
        if kind == "missing":
            key = str(loc[-1])
            line, col = source_map.position(path)
            problems.append(
                PlanProblem(
                    filename,
                    line,
                    col,
                    f"{owner} is missing '{key}'",
                    f"add '{key}:'; " + FIELD_FIXES.get(key, "see docs/plans.md"),
                )
            )
            continue
        if kind == "too_short" and isinstance(value, list) and value:
            # Only an echo of errors inside the list's items: they are reported already.
            continue
        field = _field_of(path)
        line, col = source_map.position(path)
        where = _dotted(path) or field
        if beyond and len(loc) > len(path) and isinstance(loc[len(path)], str):
            # Pydantic reports a failed union once per member; say it once, plainly.
            if path in unions_seen:
                continue
            unions_seen.add(path)
            cause = f"{owner}: {where} cannot be {_describe(value)}"
            problems.append(PlanProblem(filename, line, col, cause, _fix_for(field, kind, value)))
            continue
        message = _message(error, value if not beyond else None, field)
        if kind == "value_error" and path and isinstance(path[-1], int):
            # A whole item failed its own rule (a task without an action): say it of the item.
            problems.append(
                PlanProblem(
                    filename,
                    line,
                    col,
                    f"{owner} {message}",
                    "give the task exactly one of run:, agent:, llm: or approval:"
                    if field == "tasks"
                    else _fix_for(field, kind, value),
                )
            )
            continue
        if beyond and kind in ("string_too_short", "too_short"):
            message = "must not be empty"
        cause = f"{owner}: {where} {message}" if where else f"{owner}: {message}"
        problems.append(PlanProblem(filename, line, col, cause, _fix_for(field, kind, value)))
    return problems


def validate_plan(
    data: object, source_map: SourceMap, filename: str
) -> tuple[Plan | None, list[PlanProblem]]:
    """The plan in ``data``, and every problem with it (schema and task graph)."""
    if data is None:
        return None, [
            PlanProblem(
                filename, 1, 1, "the plan is empty", "start with 'name:', 'project:' and 'phases:'"
            )
        ]
    if not isinstance(data, Mapping):
        line, col = source_map.position(())
        return None, [
            PlanProblem(
                filename,
                line,
                col,
                f"a plan is a mapping of keys to values, not {_describe(data)}",
                "start with 'name:', 'project:' and 'phases:' at the top level",
            )
        ]
    plan: Plan | None = None
    problems: list[PlanProblem] = []
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problems_from(exc, data, source_map, filename))
    for issue in check_graph(shape_of_data(data)):
        line, col = source_map.position(issue.path, key=issue.key)
        problems.append(PlanProblem(filename, line, col, issue.cause, issue.fix))
    if plan is not None:
        found_problems: list[MatrixProblem | ExpressionProblem] = [
            *check_input_declarations(plan),
            *matrix_problems(plan),
            *check_expressions(plan),
        ]
        for found in found_problems:
            line, col = source_map.position(found.path)
            problems.append(PlanProblem(filename, line, col, found.cause, found.fix, found.code))
    if plan is None or problems:
        return None, problems
    return expand_plan(plan), problems


__all__ = ["FIELD_FIXES", "allowed_keys", "model_at", "validate_plan"]
