"""Checks across tasks (ids, ``needs``, cycles, ``workdir``) and the order tasks run in.

Pure functions over a small shape of the plan, so the loader can check the task graph of a
file whose other parts are still invalid and report every problem in one pass.
"""

from __future__ import annotations

import difflib
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from vigil.plan.matrix import raw_expansion_ids
from vigil.plan.models import Plan
from vigil.plan.sourcemap import DataPath


@dataclass(frozen=True)
class GraphTask:
    """What the graph checks need of a task, and where it sits in the plan data."""

    id: str
    needs: tuple[str, ...] = ()
    workdir: str | None = None
    path: DataPath = ()
    needs_is_list: bool = True
    expansions: tuple[str, ...] = ()
    """The ids of the task's matrix expansions (``test[python=3.12]``), if it has one."""


@dataclass(frozen=True)
class GraphPhase:
    """A phase's id and tasks, in plan order."""

    id: str | None
    tasks: tuple[GraphTask, ...]
    path: DataPath = ()


@dataclass(frozen=True)
class GraphProblem:
    """A graph mistake at a data path, before it is given a ``file:line:col``."""

    path: DataPath
    cause: str
    fix: str
    key: bool = False


@dataclass(frozen=True)
class PhaseOrder:
    """The tasks of one phase in dependency layers: each wave may run in parallel."""

    phase: str
    waves: list[list[str]] = field(default_factory=list)


def shape_of_plan(plan: Plan) -> list[GraphPhase]:
    """The graph shape of a validated plan."""
    return [
        GraphPhase(
            phase.id,
            tuple(
                GraphTask(t.id, t.needs, t.workdir, ("phases", i, "tasks", j))
                for j, t in enumerate(phase.tasks)
            ),
            ("phases", i),
        )
        for i, phase in enumerate(plan.phases)
    ]


def shape_of_data(data: object) -> list[GraphPhase]:
    """The graph shape of raw plan data, skipping whatever has the wrong type."""
    phases: list[GraphPhase] = []
    raw_phases = data.get("phases") if isinstance(data, Mapping) else None
    if not isinstance(raw_phases, list):
        return phases
    for i, raw_phase in enumerate(raw_phases):
        if not isinstance(raw_phase, Mapping):
            continue
        phase_id = raw_phase.get("id")
        raw_tasks = raw_phase.get("tasks")
        tasks: list[GraphTask] = []
        for j, raw in enumerate(raw_tasks if isinstance(raw_tasks, list) else []):
            if not isinstance(raw, Mapping) or not isinstance(raw.get("id"), str):
                continue
            needs = raw.get("needs", [])
            listed = not isinstance(needs, str)
            names = [needs] if isinstance(needs, str) else needs
            if not isinstance(names, list):
                names = []
            workdir = raw.get("workdir")
            matrix = raw.get("matrix")
            tasks.append(
                GraphTask(
                    raw["id"],
                    tuple(n for n in names if isinstance(n, str)),
                    workdir if isinstance(workdir, str) else None,
                    ("phases", i, "tasks", j),
                    listed,
                    tuple(raw_expansion_ids(raw["id"], matrix)) if matrix is not None else (),
                )
            )
        phases.append(
            GraphPhase(phase_id if isinstance(phase_id, str) else None, tuple(tasks), ("phases", i))
        )
    return phases


def _closest(word: str, choices: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return found[0] if found else None


def _need_path(task: GraphTask, index: int) -> DataPath:
    return (*task.path, "needs", index) if task.needs_is_list else (*task.path, "needs")


def _workdir_problem(task: GraphTask) -> GraphProblem | None:
    workdir = task.workdir
    if workdir is None:
        return None
    path = (*task.path, "workdir")
    if workdir.startswith(("/", "~", "\\")) or (len(workdir) > 1 and workdir[1] == ":"):
        return GraphProblem(
            path,
            f"workdir '{workdir}' of task '{task.id}' is not inside the workspace",
            "give a path relative to the workspace, e.g. 'services/api'",
        )
    normal = posixpath.normpath(workdir.replace("\\", "/"))
    if normal == ".." or normal.startswith("../"):
        return GraphProblem(
            path,
            f"workdir '{workdir}' of task '{task.id}' leads out of the workspace",
            "remove the '..' parts; tasks run inside the workspace only",
        )
    return None


def _cycles(phase: GraphPhase) -> list[list[str]]:
    """Each cycle among ``needs`` inside one phase, once, as a closed walk of ids."""
    edges = {t.id: [n for n in t.needs if n != t.id] for t in phase.tasks}
    order = {t.id: k for k, t in enumerate(phase.tasks)}
    # Tarjan's strongly connected components, iterative so deep chains cannot overflow.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, pos = work.pop()
            if pos == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            succ = [n for n in edges[node] if n in edges]
            if pos < len(succ):
                work.append((node, pos + 1))
                nxt = succ[pos]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    cycles = []
    for component in components:
        members = set(component)
        start = min(component, key=order.__getitem__)
        walk = [start]
        seen = {start}
        node = start
        while True:
            nxt = next(n for n in edges[node] if n in members)
            if nxt in seen:
                walk = walk[walk.index(nxt) :]
                walk.append(nxt)
                break
            walk.append(nxt)
            seen.add(nxt)
            node = nxt
        cycles.append(walk)
    return cycles


def check_graph(phases: Sequence[GraphPhase]) -> list[GraphProblem]:
    """Every problem with ids, ``needs`` and ``workdir`` across the plan."""
    problems: list[GraphProblem] = []
    seen_phases: dict[str, GraphPhase] = {}
    for phase in phases:
        if phase.id is None:
            continue
        if phase.id in seen_phases:
            problems.append(
                GraphProblem(
                    (*phase.path, "id"),
                    f"phase id '{phase.id}' is used twice",
                    "give each phase its own id",
                )
            )
        else:
            seen_phases[phase.id] = phase
    phase_of: dict[str, int] = {}
    # A need of one expansion (``test[python=3.12]``) is checked as a need of its matrix.
    group_of = {e: t.id for phase in phases for t in phase.tasks for e in t.expansions}
    phases = [
        replace(
            phase,
            tasks=tuple(
                replace(t, needs=tuple(group_of.get(n, n) for n in t.needs)) for t in phase.tasks
            ),
        )
        for phase in phases
    ]
    for k, phase in enumerate(phases):
        for task in phase.tasks:
            if task.id in phase_of:
                problems.append(
                    GraphProblem(
                        (*task.path, "id"),
                        f"task id '{task.id}' is used twice",
                        "give each task in the plan its own id",
                    )
                )
            else:
                phase_of[task.id] = k
    for k, phase in enumerate(phases):
        for task in phase.tasks:
            for n, need in enumerate(task.needs):
                where = _need_path(task, n)
                if need == task.id:
                    problems.append(
                        GraphProblem(
                            where,
                            f"task '{task.id}' needs itself",
                            f"remove '{need}' from its needs",
                        )
                    )
                elif need not in phase_of:
                    close = _closest(need, phase_of)
                    hint = f"did you mean '{close}'?" if close else "name an existing task id"
                    problems.append(
                        GraphProblem(where, f"task '{task.id}' needs unknown task '{need}'", hint)
                    )
                elif phase_of[need] > k:
                    later = phases[phase_of[need]].id or "a later phase"
                    problems.append(
                        GraphProblem(
                            where,
                            f"task '{task.id}' needs '{need}', which is in later phase '{later}'",
                            "phases run in order: move one of the two tasks, or drop the need",
                        )
                    )
            problem = _workdir_problem(task)
            if problem is not None:
                problems.append(problem)
        by_id = {t.id: t for t in phase.tasks}
        for cycle in _cycles(phase):
            first = by_id[cycle[0]]
            problems.append(
                GraphProblem(
                    _need_path(first, first.needs.index(cycle[1])),
                    "tasks need each other in a cycle: " + " -> ".join(cycle),
                    "remove one of these needs so the tasks can run in some order",
                )
            )
    return problems


def check_plan(plan: Plan) -> list[GraphProblem]:
    """Every graph problem of a validated plan."""
    return check_graph(shape_of_plan(plan))


def execution_order(plan: Plan) -> list[PhaseOrder]:
    """Per phase, its tasks in waves that respect ``needs``; ValueError on a cycle."""
    orders: list[PhaseOrder] = []
    for phase in plan.phases:
        ids = [t.id for t in phase.tasks]
        local = set(ids)
        # Needs on tasks of earlier phases are met before this phase starts.
        waiting = {t.id: {n for n in t.needs if n in local} for t in phase.tasks}
        waves: list[list[str]] = []
        done: set[str] = set()
        while len(done) < len(ids):
            wave = [i for i in ids if i not in done and waiting[i] <= done]
            if not wave:
                stuck = [i for i in ids if i not in done]
                raise ValueError(f"phase '{phase.id}' has a needs cycle among {stuck}")
            waves.append(wave)
            done.update(wave)
        orders.append(PhaseOrder(phase.id, waves))
    return orders
