"""Graph checks and execution order: waves respect every need, cycles are always found."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vigil.plan import Phase, Plan, Task, execution_order
from vigil.plan.graph import GraphPhase, GraphTask, check_graph, check_plan


def plan_of(*phases: list[tuple[str, list[str]]] | list[tuple[str, list[str], str]]) -> Plan:
    return Plan(
        name="g",
        project="g",
        phases=tuple(
            Phase(
                id=f"p{i}",
                tasks=tuple(
                    Task(
                        id=t[0], run="true", needs=tuple(t[1]), workdir=t[2] if len(t) > 2 else None
                    )
                    for t in tasks
                ),
            )
            for i, tasks in enumerate(phases)
        ),
    )


def causes(plan: Plan) -> list[str]:
    return [p.cause for p in check_plan(plan)]


def test_a_sound_plan_has_no_problems_and_needs_on_earlier_phases_are_met() -> None:
    plan = plan_of([("a", []), ("b", ["a"])], [("c", ["a", "b"]), ("d", ["c"])])
    assert check_plan(plan) == []
    orders = execution_order(plan)
    assert [(o.phase, o.waves) for o in orders] == [
        ("p0", [["a"], ["b"]]),
        ("p1", [["c"], ["d"]]),
    ]


def test_waves_keep_plan_order_and_allow_needs_on_later_listed_tasks() -> None:
    plan = plan_of([("deploy", ["build"]), ("lint", []), ("build", [])])
    assert execution_order(plan)[0].waves == [["lint", "build"], ["deploy"]]


def test_duplicate_ids_are_reported_where_they_repeat() -> None:
    plan = plan_of([("a", []), ("b", [])], [("a", [])])
    problems = check_plan(plan)
    assert [(p.path, p.cause) for p in problems] == [
        (("phases", 1, "tasks", 0, "id"), "task id 'a' is used twice")
    ]
    shape = [GraphPhase("x", (GraphTask("t", path=("phases", 0, "tasks", 0)),), ("phases", 0))]
    shape.append(GraphPhase("x", (GraphTask("u", path=("phases", 1, "tasks", 0)),), ("phases", 1)))
    assert [p.cause for p in check_graph(shape)] == ["phase id 'x' is used twice"]


def test_unknown_need_suggests_the_closest_id() -> None:
    problems = check_plan(plan_of([("build", []), ("test", ["biuld"])]))
    assert [(p.cause, p.fix) for p in problems] == [
        ("task 'test' needs unknown task 'biuld'", "did you mean 'build'?")
    ]
    assert problems[0].path == ("phases", 0, "tasks", 1, "needs", 0)


def test_self_need_and_later_phase_need() -> None:
    plan = plan_of([("a", ["a"]), ("b", ["c"])], [("c", [])])
    assert causes(plan) == [
        "task 'a' needs itself",
        "task 'b' needs 'c', which is in later phase 'p1'",
    ]


def test_cycles_are_named_once() -> None:
    plan = plan_of([("a", ["c"]), ("b", ["a"]), ("c", ["b"]), ("d", ["d"])])
    assert causes(plan) == [
        "task 'd' needs itself",
        "tasks need each other in a cycle: a -> c -> b -> a",
    ]
    with pytest.raises(ValueError, match="cycle"):
        execution_order(plan)


@pytest.mark.parametrize(
    ("workdir", "bad"),
    [
        ("src", False),
        ("a/../b", False),
        ("./x", False),
        ("/etc", True),
        ("~/x", True),
        ("..", True),
        ("a/../../b", True),
        ("../sibling", True),
        ("C:\\temp", True),
    ],
)
def test_workdir_stays_inside_the_workspace(workdir: str, bad: bool) -> None:
    problems = check_plan(plan_of([("a", [], workdir)]))
    assert bool(problems) is bad
    if bad:
        assert problems[0].path == ("phases", 0, "tasks", 0, "workdir")


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[str], dict[str, list[str]]]:
    """Task ids in a shuffled plan order and needs that only point to topologically earlier."""
    n = draw(st.integers(1, 12))
    topo = [f"t{i}" for i in range(n)]
    needs = {
        t: draw(st.lists(st.sampled_from(topo[:i]), unique=True)) if i else []
        for i, t in enumerate(topo)
    }
    order = draw(st.permutations(topo))
    return list(order), needs


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(dags(), st.integers(0, 3))
def test_waves_respect_every_need_and_hold_every_task_once(
    dag: tuple[list[str], dict[str, list[str]]], split: int
) -> None:
    order, needs = dag
    # Tasks needed across phases must come from earlier phases: cut the topological order.
    topo = sorted(order, key=lambda t: int(t[1:]))
    cut = min(split, len(topo))
    first, second = set(topo[:cut]), set(topo[cut:])
    phases = [
        [(t, needs[t]) for t in order if t in first],
        [(t, needs[t]) for t in order if t in second],
    ]
    plan = plan_of(*[p for p in phases if p])
    assert check_plan(plan) == []
    for phase_order, phase in zip(execution_order(plan), plan.phases, strict=True):
        flat = [t for wave in phase_order.waves for t in wave]
        assert sorted(flat) == sorted(t.id for t in phase.tasks)
        wave_of = {t: k for k, wave in enumerate(phase_order.waves) for t in wave}
        for task in phase.tasks:
            for need in task.needs:
                if need in wave_of:
                    assert wave_of[need] < wave_of[task.id]
        assert all(phase_order.waves)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(dags(), st.data())
def test_any_cycle_is_reported(
    dag: tuple[list[str], dict[str, list[str]]], data: st.DataObject
) -> None:
    order, needs = dag
    assume(len(order) >= 2)
    ring = data.draw(st.lists(st.sampled_from(order), min_size=2, unique=True))
    needs = {t: list(n) for t, n in needs.items()}
    for a, b in zip(ring, ring[1:] + ring[:1], strict=True):
        if b not in needs[a]:
            needs[a].append(b)
    plan = plan_of([(t, needs[t]) for t in order])
    cycles = [p for p in check_plan(plan) if "cycle" in p.cause]
    assert cycles
    for problem in cycles:
        walk = problem.cause.split(": ", 1)[1].split(" -> ")
        assert walk[0] == walk[-1]
        for a, b in itertools.pairwise(walk):
            assert b in needs[a]
    with pytest.raises(ValueError):
        execution_order(plan)
