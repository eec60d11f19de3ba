"""Matrices: one task written, one task run per combination of values.

Expanded when the plan is loaded, so the engine, selection, reports and the journal see
ordinary tasks: ``test`` with ``matrix: {python: ["3.11", "3.12"]}`` becomes
``test[python=3.11]`` and ``test[python=3.12]``, and a task that ``needs: [test]`` needs
both. Combinations follow GitHub Actions' ``strategy.matrix``: the product of the keys,
less each ``exclude`` entry that matches, plus each ``include`` entry (added to the
combinations it does not contradict, or as a combination of its own).

An expansion's values are data: ``${{ matrix.KEY }}`` is read where expressions are
(``env:``, ``if:``, prompts) and reaches a step only as an environment variable. In the
expansion's id, a value keeps its letters, digits and ``_ . + -``; anything else
becomes ``_``, so an id never holds a path separator, a space or a quote.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass

from vigil.plan.expressions import as_text
from vigil.plan.models import RECORDED, Expansion, Matrix, MatrixValue, Plan, Task
from vigil.plan.problems import MatrixTooLarge
from vigil.plan.sourcemap import DataPath

MAX_EXPANSIONS = 256
"""A matrix expanding to more tasks than this is refused (``MATRIX_TOO_LARGE``)."""

MAX_ID_CHARS = 200
"""The longest expansion id: ids name log directories (file names stop at 255 bytes)."""

MATRIX_TOO_LARGE = MatrixTooLarge.code
"""The code of a matrix with more than :data:`MAX_EXPANSIONS` combinations."""

_NOT_IN_ID = re.compile(r"[^A-Za-z0-9_.+-]")

Combination = dict[str, MatrixValue]


@dataclass(frozen=True)
class MatrixProblem:
    """A mistake in a ``matrix:`` at a data path (``code`` set for a stable kind)."""

    path: DataPath
    cause: str
    fix: str
    code: str = ""


def _matches(combination: Mapping[str, MatrixValue], entry: Mapping[str, MatrixValue]) -> bool:
    return all(k in combination and _same(combination[k], v) for k, v in entry.items())


def _same(a: MatrixValue, b: MatrixValue) -> bool:
    # ``1 == True`` in Python; in a matrix, a boolean and a number are different values.
    return type(a) is type(b) and a == b


def combinations(matrix: Matrix) -> list[tuple[Combination, tuple[str, ...]]]:
    """Each combination of ``matrix``, in order, with the keys that name it in its id.

    The product of the keys (first key slowest), less the ``exclude`` matches; then each
    ``include`` entry is added to every product combination whose original keys it does
    not contradict, or becomes a combination of its own when it fits none.
    """
    axes = matrix.axes
    keys = tuple(axes)
    product: list[Combination] = []
    if keys:
        for values in itertools.product(*(axes[k] for k in keys)):
            combo = dict(zip(keys, values, strict=True))
            if not any(_matches(combo, entry) for entry in matrix.exclude):
                product.append(combo)
    found: list[tuple[Combination, tuple[str, ...]]] = [(c, keys) for c in product]
    for entry in matrix.include:
        original = {k: v for k, v in entry.items() if k in axes}
        added = False
        for combo, _ in found[: len(product)]:
            if _matches(combo, original):
                combo.update({k: v for k, v in entry.items() if k not in axes})
                added = True
        if not added:
            found.append((dict(entry), tuple(entry)))
    return found


def expansion_id(group: str, combination: Mapping[str, MatrixValue], keys: tuple[str, ...]) -> str:
    """``test[python=3.12,db=pg]``: the group's id and the naming values, made safe."""
    parts = [f"{k}={_NOT_IN_ID.sub('_', as_text(combination[k]))}" for k in keys]
    return f"{group}[{','.join(parts)}]"


def check_matrix(task: Task, path: DataPath) -> list[MatrixProblem]:
    """Every problem with ``task``'s matrix (none when it has none)."""
    matrix = task.matrix
    if matrix is None:
        return []
    where = (*path, "matrix")
    problems: list[MatrixProblem] = []
    axes = matrix.axes
    for n, entry in enumerate(matrix.exclude):
        unknown = [k for k in entry if k not in axes]
        if unknown or not entry:
            problems.append(
                MatrixProblem(
                    (*where, "exclude", n),
                    f"task '{task.id}': exclude[{n}] names "
                    + (f"'{unknown[0]}', which is not a matrix key" if unknown else "no key"),
                    f"exclude combinations by the matrix's keys: {', '.join(axes) or 'none'}",
                )
            )
    for n, entry in enumerate(matrix.include):
        if not entry:
            problems.append(
                MatrixProblem(
                    (*where, "include", n),
                    f"task '{task.id}': include[{n}] is empty",
                    "write the keys and values of the combination to add, e.g. {os: macos}",
                )
            )
    if problems:
        return problems
    if not axes and not matrix.include:
        return [
            MatrixProblem(
                where,
                f"task '{task.id}': the matrix has no keys",
                'give each key a list of values, e.g. matrix: {python: ["3.11", "3.12"]}',
            )
        ]
    size = 1
    for values in axes.values():
        size *= len(values)
    if size > MAX_EXPANSIONS * 16:
        # Not even built: the product alone is far beyond the limit.
        return [_too_large(task, where, size)]
    found = combinations(matrix)
    if len(found) > MAX_EXPANSIONS:
        return [_too_large(task, where, len(found))]
    if not found:
        return [
            MatrixProblem(
                where,
                f"task '{task.id}': exclude leaves no combination of the matrix",
                "remove an exclude entry, or the task",
            )
        ]
    seen: dict[str, int] = {}
    for n, (combo, keys) in enumerate(found):
        tid = expansion_id(task.id, combo, keys)
        if len(tid) > MAX_ID_CHARS:
            return [
                MatrixProblem(
                    where,
                    f"task '{task.id}': the id of a combination would be longer than "
                    f"{MAX_ID_CHARS} characters",
                    "use shorter matrix keys or values (put long values in env: by a short key)",
                )
            ]
        if tid in seen:
            return [
                MatrixProblem(
                    where,
                    f"task '{task.id}': combinations {seen[tid] + 1} and {n + 1} would both "
                    f"be '{tid}'",
                    "make the values differ in letters or digits (ids keep only those and "
                    "'_ . + -'), or drop the repeated value",
                )
            ]
        seen[tid] = n
    return []


def _too_large(task: Task, where: DataPath, size: int) -> MatrixProblem:
    return MatrixProblem(
        where,
        f"task '{task.id}': the matrix expands to {size} tasks, more than {MAX_EXPANSIONS} "
        f"[{MATRIX_TOO_LARGE}]",
        "use fewer keys or values, exclude combinations, or split the task",
        MATRIX_TOO_LARGE,
    )


def matrix_problems(plan: Plan) -> list[MatrixProblem]:
    """Every problem with the matrices of ``plan`` (not expanded yet)."""
    problems: list[MatrixProblem] = []
    for i, phase in enumerate(plan.phases):
        for j, task in enumerate(phase.tasks):
            problems += check_matrix(task, ("phases", i, "tasks", j))
    return problems


def expansion_ids(task: Task) -> list[str]:
    """The ids ``task``'s matrix expands to (empty without a matrix)."""
    if task.matrix is None:
        return []
    return [expansion_id(task.id, combo, keys) for combo, keys in combinations(task.matrix)]


def raw_expansion_ids(task_id: str, raw: object) -> list[str]:
    """The ids a raw ``matrix:`` expands to, or none if it is not a valid matrix (its
    mistakes are reported by validation); for the graph checks of raw plan data."""
    try:
        matrix = Matrix.model_validate(raw)
    except ValueError:
        return []
    size = 1
    for values in matrix.axes.values():
        size *= len(values)
    if size > MAX_EXPANSIONS * 16:
        return []
    return [expansion_id(task_id, combo, keys) for combo, keys in combinations(matrix)]


def expand_plan(plan: Plan) -> Plan:
    """``plan`` with each matrix task replaced by its expansions, in place, and each need
    of a matrix replaced by needs of all its expansions. ``plan`` must have no
    :func:`matrix_problems`."""
    groups = {t.id: expansion_ids(t) for _, t in plan.tasks() if t.matrix is not None}
    if not groups:
        return plan

    def needs_of(task: Task) -> tuple[str, ...]:
        out: list[str] = []
        for need in task.needs:
            for tid in groups.get(need, [need]):
                if tid not in out:
                    out.append(tid)
        return tuple(out)

    phases = []
    for phase in plan.phases:
        tasks: list[Task] = []
        for task in phase.tasks:
            needs = needs_of(task)
            if task.matrix is None:
                tasks.append(
                    task if needs == task.needs else task.model_copy(update={"needs": needs})
                )
                continue
            matrix = task.matrix
            for tid, (combo, _) in zip(groups[task.id], combinations(matrix), strict=True):
                expansion = Expansion(group=task.id, values=combo, matrix=matrix)
                tasks.append(
                    task.model_copy(
                        update={"id": tid, "needs": needs, "matrix": None, "expansion": expansion}
                    )
                )
        phases.append(phase.model_copy(update={"tasks": tuple(tasks)}))
    # Validated again (as a recorded plan) so the indexes and every rule hold for the
    # expanded tasks too.
    data = plan.model_copy(update={"phases": tuple(phases)}).model_dump(by_alias=True)
    return Plan.model_validate(data, context={RECORDED: True})


__all__ = [
    "MATRIX_TOO_LARGE",
    "MAX_EXPANSIONS",
    "MatrixProblem",
    "check_matrix",
    "combinations",
    "expand_plan",
    "expansion_id",
    "expansion_ids",
    "matrix_problems",
    "raw_expansion_ids",
]
