"""``to_yaml``: any valid plan written as YAML loads back to an equal plan, and reads well."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigil.plan import Check, Defaults, Phase, Plan, RetryPolicy, Task, load_plan_text, to_yaml
from vigil.plan.convert import duration_text
from vigil.plan.duration import parse_duration

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,12}", fullmatch=True)
texts = st.text(max_size=60)
# A script holding ``${{`` is a plan error by design (VIGIL-PLAN-EXPRESSION-IN-SCRIPT): no
# valid plan has one, so none is drawn.
scripts = st.one_of(
    st.text(min_size=1, max_size=80),
    st.lists(st.text(max_size=30), min_size=2, max_size=5).map("\n".join).filter(bool),
    st.sampled_from(["make", "echo 'a: b'\n  indented\n\ttab", "yes", "null", "- x", "|", "#"]),
).filter(lambda s: "${{" not in s)
durations = st.one_of(
    st.integers(0, 10**7).map(float),
    st.floats(0, 10**6, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.25, 0.001, 1.5, 90.0, 5400.0]),
)
retries = st.builds(
    RetryPolicy,
    attempts=st.integers(1, 100),
    initial=durations,
    factor=st.floats(1, 100),
    max=durations,
    jitter=st.floats(0, 1),
    on=st.one_of(
        st.just("all"),
        st.lists(st.one_of(st.sampled_from(["timeout", "failure"]), st.integers(0, 255))),
    ),
)
checks = st.builds(Check, run=scripts, name=st.none() | texts, timeout=st.none() | durations)
# An env name holding '=' or a NUL, or a value holding a NUL, is a plan error by design.
envs = st.dictionaries(
    st.text(min_size=1, max_size=10).filter(lambda s: "=" not in s and "\x00" not in s),
    texts.filter(lambda s: "${{" not in s and "\x00" not in s),
    max_size=3,
)


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    task_ids = draw(st.lists(ids, min_size=1, max_size=8, unique=True))
    cuts = sorted(draw(st.lists(st.integers(1, len(task_ids)), max_size=2, unique=True)))
    groups = [task_ids[a:b] for a, b in zip([0, *cuts], [*cuts, len(task_ids)], strict=True)]
    groups = [g for g in groups if g]
    phase_ids = draw(st.lists(ids, min_size=len(groups), max_size=len(groups), unique=True))
    seen: list[str] = []
    phases = []
    for phase_id, group in zip(phase_ids, groups, strict=True):
        tasks = []
        for task_id in group:
            tasks.append(
                Task(
                    id=task_id,
                    name=draw(st.none() | texts),
                    description=draw(st.none() | texts),
                    run=draw(scripts),
                    needs=tuple(draw(st.lists(st.sampled_from(seen), unique=True)) if seen else ()),
                    env=draw(envs),
                    workdir=draw(st.none() | st.sampled_from(["src", "a/b", "./x"])),
                    timeout=draw(st.none() | durations),
                    retry=draw(st.none() | retries),
                    fallback=draw(st.none() | scripts),
                    on_failure=draw(st.sampled_from(["stop", "continue"])),
                    checks=tuple(draw(st.lists(checks, max_size=2))),
                )
            )
            seen.append(task_id)
        phases.append(
            Phase(
                id=phase_id,
                name=draw(st.none() | texts),
                description=draw(st.none() | texts),
                tasks=tuple(tasks),
                checks=tuple(draw(st.lists(checks, max_size=2))),
            )
        )
    return Plan(
        name=draw(st.text(min_size=1, max_size=30)),
        project=draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,12}", fullmatch=True)),
        description=draw(st.none() | texts),
        env=draw(envs),
        defaults=Defaults(retry=draw(st.none() | retries), timeout=draw(st.none() | durations)),
        phases=tuple(phases),
    )


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans())
def test_any_plan_survives_the_round_trip(plan: Plan) -> None:
    text = to_yaml(plan)
    assert load_plan_text(text, "converted.yaml").plan == plan


@given(durations)
def test_duration_text_is_exact(seconds: float) -> None:
    assert parse_duration(duration_text(seconds)) == seconds


def test_output_is_readable() -> None:
    plan = Plan(
        name="Demo",
        project="demo",
        phases=(
            Phase(
                id="build",
                tasks=(
                    Task(id="a", run="make\nmake install", timeout=600),
                    Task(id="b", run="true", needs=("a",), retry=RetryPolicy(attempts=3)),
                ),
                checks=(Check(run="test -f out"),),
            ),
        ),
    )
    assert to_yaml(plan) == (
        "name: Demo\n"
        "project: demo\n"
        "phases:\n"
        "  - id: build\n"
        "    tasks:\n"
        "      - id: a\n"
        "        timeout: 10m\n"
        "        run: |-\n"
        "          make\n"
        "          make install\n"
        "      - id: b\n"
        "        needs: [a]\n"
        "        retry:\n"
        "          attempts: 3\n"
        "        run: 'true'\n"
        "    validate:\n"
        "      - test -f out\n"
    )


def test_a_matrix_is_written_back_once_and_loads_to_the_same_expansions() -> None:
    text = """
name: m
project: m
phases:
  - id: p
    tasks:
      - id: test
        matrix:
          python: ["3.11", "3.12"]
          db: [pg, sqlite]
          exclude: [{python: "3.11", db: sqlite}]
          include: [{python: "3.12", db: pg, extra: true}, {python: "3.13"}]
          max_parallel: 2
          fail_fast: true
        env: {PY: "${{ matrix.python }}"}
        run: echo "$PY"
      - {id: all, needs: test, run: "true"}
      - {id: one, needs: ["test[python=3.13]"], run: "true"}
"""
    plan = load_plan_text(text, "m.yaml").plan
    written = to_yaml(plan)
    assert "expansion" not in written and written.count("- id: test\n") == 1
    assert "python: ['3.11', '3.12']" in written and "needs: [test]" in written
    again = load_plan_text(written, "converted.yaml").plan
    assert again == plan and again.content_hash() == plan.content_hash()
