"""Expanding a matrix (pure): which combinations, which ids, and which are refused."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as hs

from vigil.plan import PlanInvalid, load_plan_text
from vigil.plan.matrix import MAX_EXPANSIONS, combinations, expand_plan, matrix_problems
from vigil.plan.models import EXPANSION_ID_PATTERN, Matrix, Plan

values = hs.one_of(
    hs.text(max_size=12),
    hs.integers(-5, 5),
    hs.booleans(),
    hs.sampled_from(['"; rm -rf ~; echo "', "../../etc", "a/b", "x y", "$(id)", "3.12"]),
)
axes = hs.dictionaries(
    hs.from_regex(r"[a-z_][a-z0-9_-]{0,5}", fullmatch=True).filter(
        lambda k: k not in ("include", "exclude", "max_parallel", "fail_fast")
    ),
    hs.lists(values, min_size=1, max_size=4),
    min_size=1,
    max_size=3,
)


def plan_with(matrix: dict[str, Any], **task: Any) -> Plan:
    data = {
        "name": "m",
        "project": "m",
        "phases": [{"id": "p", "tasks": [{"id": "t", "matrix": matrix, "run": "true", **task}]}],
    }
    return Plan.model_validate(data)


@settings(max_examples=200, deadline=None)
@given(axes=axes, data=hs.data())
def test_expansions_are_the_product_less_exclusions_with_safe_ids(
    axes: dict[str, list[Any]], data: Any
) -> None:
    matrix = Matrix.model_validate(axes)
    full = combinations(matrix)
    product = 1
    for listed in axes.values():
        product *= len(listed)
    assert len(full) == product
    excluded = data.draw(hs.sampled_from([c for c, _ in full]))
    with_exclude = Matrix.model_validate({**axes, "exclude": [excluded]})
    kept = [c for c, _ in combinations(with_exclude)]

    def same(combo: dict[str, Any]) -> bool:
        # Values compare with their type: True is not 1 in a matrix.
        return all(type(combo[k]) is type(v) and combo[k] == v for k, v in excluded.items())

    assert not any(same(c) for c in kept)
    assert len(kept) == product - sum(1 for c, _ in full if same(c))
    plan = plan_with({**axes, "exclude": [excluded]})
    if matrix_problems(plan):
        return  # ids would collide, or nothing is left: refused, checked below
    expanded = expand_plan(plan)
    ids = [t.id for t in expanded.phases[0].tasks]
    assert len(ids) == len(set(ids)) == len(kept)
    for tid in ids:
        assert re.fullmatch(EXPANSION_ID_PATTERN, tid)
        assert not set(tid) & set("/\\ \"'$`;~\n")
    for task, combo in zip(expanded.phases[0].tasks, kept, strict=True):
        assert task.expansion is not None and task.expansion.values == combo


def test_include_adds_keys_to_matches_or_a_combination_of_its_own() -> None:
    matrix = Matrix.model_validate(
        {
            "os": ["linux", "mac"],
            "py": ["3.11", "3.12"],
            "include": [
                {"os": "linux", "extra": "cov"},
                {"os": "windows", "py": "3.12"},
                {"py": "3.12", "extra": "late"},
            ],
        }
    )
    got = [(c, keys) for c, keys in combinations(matrix)]
    assert got == [
        ({"os": "linux", "py": "3.11", "extra": "cov"}, ("os", "py")),
        ({"os": "linux", "py": "3.12", "extra": "late"}, ("os", "py")),
        ({"os": "mac", "py": "3.11"}, ("os", "py")),
        ({"os": "mac", "py": "3.12", "extra": "late"}, ("os", "py")),
        ({"os": "windows", "py": "3.12"}, ("os", "py")),
    ]


def test_a_boolean_and_a_number_are_different_values() -> None:
    matrix = Matrix.model_validate({"flag": [True, 1], "exclude": [{"flag": 1}]})
    assert [c for c, _ in combinations(matrix)] == [{"flag": True}]


def test_colliding_ids_and_an_empty_result_are_refused() -> None:
    for matrix, says in (
        ({"v": ["a/b", "a:b"]}, "would both be 't[v=a_b]'"),
        ({"v": ["a"], "exclude": [{"v": "a"}]}, "exclude leaves no combination"),
        ({"v": list(range(MAX_EXPANSIONS + 1))}, "more than 256"),
    ):
        problems = matrix_problems(plan_with(matrix))
        assert len(problems) == 1 and says in problems[0].cause, problems


def test_needs_of_a_matrix_become_needs_of_every_expansion() -> None:
    text = """
name: m
project: m
phases:
  - id: p
    tasks:
      - {id: t, matrix: {v: [1, 2]}, run: "true"}
      - {id: all, needs: t, run: "true"}
      - {id: one, needs: ["t[v=2]"], run: "true"}
"""
    plan = load_plan_text(text, "m.yaml").plan
    assert plan.task("all").needs == ("t[v=1]", "t[v=2]")
    assert plan.task("one").needs == ("t[v=2]",)
    assert plan.groups == {"t": ("t[v=1]", "t[v=2]")}
    named = load_plan_text(text.replace("{id: t,", "{id: t, name: Unit tests,"), "m.yaml").plan
    assert [t.title for t in named.phases[0].tasks[:2]] == ["Unit tests [v=1]", "Unit tests [v=2]"]
    # The recorded plan reads back to the same plan; a plan file may not write expansions.
    assert Plan.from_record(plan.canonical_json()) == plan
    try:
        load_plan_text(text.replace("needs: t,", 'needs: "t[v=3]",'), "m.yaml")
    except PlanInvalid as exc:
        assert "needs unknown task 't[v=3]'" in str(exc.details)
    else:
        raise AssertionError("a need of an expansion that does not exist was accepted")
