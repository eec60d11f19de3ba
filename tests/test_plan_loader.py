"""Loading YAML plans: every mistake at its line:col, all at once, and nothing but
PlanInvalid for any input at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigil.errors import ExitCode, VigilError
from vigil.plan import LoadedPlan, PlanInvalid, PlanNotFound, PlanProblem, load_plan, load_plan_text

EXAMPLES = Path(__file__).parent.parent / "examples"
PLANS = Path(__file__).parent / "data" / "plans"

GOOD = """\
name: Demo
project: demo
phases:
  - id: build
    tasks:
      - id: compile
        run: make
"""


def problems(text: str, name: str = "plan.yaml") -> list[PlanProblem]:
    with pytest.raises(PlanInvalid) as info:
        load_plan_text(text, name)
    assert info.value.problems, "PlanInvalid without problems"
    return info.value.problems


def at(text: str) -> dict[tuple[int, int], PlanProblem]:
    return {(p.line, p.col): p for p in problems(text)}


def test_a_valid_plan_loads_with_its_source() -> None:
    loaded = load_plan_text(GOOD, "demo.yaml")
    assert isinstance(loaded, LoadedPlan)
    assert (loaded.kind, loaded.path, loaded.source) == ("yaml", "demo.yaml", GOOD)
    assert loaded.plan.task("compile").run == "make"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*")) + sorted(PLANS.glob("*.yaml")))
def test_examples_and_fixture_plans_load(path: Path) -> None:
    assert load_plan(path).plan.phases


def test_unknown_key_points_at_the_key_and_suggests_the_closest() -> None:
    text = GOOD.replace("        run: make", "        nmae: Compile\n        run: make")
    (problem,) = problems(text)
    assert (problem.line, problem.col) == (7, 9)
    assert "unknown key 'nmae' in task 'compile'" in problem.cause
    assert "did you mean 'name'?" in problem.fix
    assert "validate" in problem.fix and "checks" not in problem.fix


def test_wrong_type_bad_duration_bad_id_all_at_once_in_file_order() -> None:
    text = """\
name: Demo
project: demo
env:
  PORT: 8080
phases:
  - id: build it
    tasks:
      - id: compile
        run: [make]
        timeout: 10 minutes
        retry: {attempts: zero}
        validate:
          - make test
          - {run: make check, nmae: x}
        on_failure: ignore
"""
    found = problems(text)
    positions = [(p.line, p.col) for p in found]
    assert positions == sorted(positions)
    by_pos = {(p.line, p.col): p for p in found}
    assert "must be text, not the number 8080" in by_pos[(4, 9)].cause
    assert 'PORT: "8080"' in by_pos[(4, 9)].fix
    assert "'build it' is not a valid id" in by_pos[(6, 9)].cause
    assert "'build-it'" in by_pos[(6, 9)].fix
    assert "run must be text, not a list" in by_pos[(9, 14)].cause
    assert "'10 minutes' is not a duration" in by_pos[(10, 18)].cause
    assert "'10m'" in by_pos[(10, 18)].fix
    assert "retry.attempts must be a whole number" in by_pos[(11, 27)].cause
    assert "unknown key 'nmae' in task 'compile' at validate[1]" in by_pos[(14, 31)].cause
    assert "on_failure must be 'stop' or 'continue'" in by_pos[(15, 21)].cause
    assert len(found) == 7


def test_missing_required_keys_point_at_their_mapping() -> None:
    text = "name: Demo\nproject: demo\nphases:\n  - id: a\n    tasks:\n      - id: t\n"
    found = at(text)
    assert "task 't' is missing an action" in found[(6, 9)].cause
    assert "run:" in found[(6, 9)].fix
    assert {p.cause for p in problems("name: Demo\n")} == {
        "the plan is missing 'project'",
        "the plan is missing 'phases'",
    }


def test_graph_problems_come_with_schema_problems() -> None:
    text = """\
name: Demo
project: demo
phases:
  - id: a
    tasks:
      - id: t1
        run: x
        needs: [t3, tl]
        timeout: later
      - id: t1
        run: y
"""
    found = at(text)
    assert "later phase" not in str(found)
    assert "needs unknown task 't3'" in found[(8, 17)].cause
    assert "needs unknown task 'tl'" in found[(8, 21)].cause
    assert "did you mean 't1'?" in found[(8, 21)].fix
    assert "not a duration" in found[(9, 18)].cause
    assert "task id 't1' is used twice" in found[(10, 13)].cause


def test_validate_alias_and_single_string_forms() -> None:
    text = GOOD + "        validate: make test\n        needs: []\n"
    task = load_plan_text(text, "p.yaml").plan.task("compile")
    assert [c.run for c in task.checks] == ["make test"]
    found = at(GOOD + "        validate: ''\n")
    assert "validate must not be empty" in found[(8, 19)].cause


@pytest.mark.parametrize(
    ("text", "line", "col", "words"),
    [
        ("name: a\n\tproject: b\n", 2, 1, "tabs"),
        ("name: a\nname: b\n", 2, 1, "unique"),
        ("- name: a\n", 1, 1, "top level"),
        ("just words\n", 1, 1, "top level"),
        ("", 1, 1, "start with"),
        ("# only a comment\n", 1, 1, "start with"),
        ("name: a\n---\nname: b\n", 2, 1, "one document"),
        ("name: [a\n", 2, 1, "YAML"),
        ("name: 2024-13-45\n", 1, 7, "quote"),
        ("name: !!python/object/apply:os.system ['id']\n", 1, 7, "tag"),
        ("name: a\x00\n", 1, 8, "control character"),
        ("a: &x [*x]\n", 1, 4, "alias"),
    ],
)
def test_garbage_is_one_clear_problem(text: str, line: int, col: int, words: str) -> None:
    found = problems(text)
    assert any((p.line, p.col) == (line, col) and words in str(p) for p in found), found


def test_alias_bombs_are_refused_without_expanding() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for n in range(1, 9):
        lines.append(f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 10) + "]")
    found = problems("\n".join(lines) + "\n")
    assert len(found) == 1 and "more than" in found[0].cause


@pytest.mark.slow
def test_deep_nesting_is_a_problem_not_a_crash() -> None:
    for text in ("[" * 5000, "a:\n" + "".join(" " * i + "b:\n" for i in range(1, 2000))):
        assert problems(text)


def test_anchors_and_merge_keys_under_extension_keys_work() -> None:
    text = """\
x-task: &common
  timeout: 5m
  on_failure: continue
name: Demo
project: demo
phases:
  - id: a
    tasks:
      - <<: *common
        id: t
        run: x
"""
    task = load_plan_text(text, "p.yaml").plan.task("t")
    assert (task.timeout, task.on_failure) == (300.0, "continue")


def test_yaml_1_1_booleans_in_keys_are_plain_keys() -> None:
    text = GOOD + "        retry: {attempts: 2, on: [timeout, 75]}\n"
    retry = load_plan_text(text, "p.yaml").plan.task("compile").retry
    assert retry is not None and retry.on == ["timeout", 75]


def test_plan_invalid_is_a_usage_error_listing_every_problem() -> None:
    with pytest.raises(PlanInvalid) as info:
        load_plan_text("name: a\nname: b\n", "x.yaml")
    error = info.value
    assert isinstance(error, VigilError)
    assert error.code == "VIGIL-PLAN-INVALID" and error.exit_code == ExitCode.USAGE
    assert "x.yaml has" in error.cause
    assert error.details == [str(p) for p in error.problems]
    assert all(d.startswith("x.yaml:") and "(fix: " in d for d in error.details)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(PlanNotFound) as info:
        load_plan(tmp_path / "nope.yaml")
    assert info.value.code == "VIGIL-PLAN-NOT-FOUND"
    with pytest.raises(PlanNotFound):
        load_plan(tmp_path)
    fifo_free = tmp_path / "link.yaml"
    fifo_free.symlink_to(fifo_free)  # a symlink loop cannot be opened
    with pytest.raises(PlanNotFound):
        load_plan(fifo_free)


def test_binary_and_non_utf8_files(tmp_path: Path) -> None:
    png = tmp_path / "image.yaml"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert "binary" in problems_of_file(png)[0].cause
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\nproject: p\n")
    (problem,) = problems_of_file(latin)
    assert (problem.line, problem.col) == (1, 10) and "UTF-8" in problem.cause


def test_utf8_bom_and_crlf_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode())
    assert load_plan(path).plan.name == "Demo"


def problems_of_file(path: Path) -> list[PlanProblem]:
    with pytest.raises(PlanInvalid) as info:
        load_plan(path)
    return info.value.problems


def _only_plan_invalid(text: str, name: str) -> None:
    try:
        load_plan_text(text, name)
    except PlanInvalid as exc:
        for p in exc.problems:
            assert p.line >= 1 and p.col >= 1 and p.cause and p.fix
            assert "\n" not in p.cause


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.sampled_from(["p.yaml", "p.md"]))
def test_random_text_never_raises_anything_but_plan_invalid(text: str, name: str) -> None:
    _only_plan_invalid(text, name)


YAMLISH = st.text(alphabet=":-[]{}&*!|>'\"#\n\t ?,%@`abcxyz019", max_size=120)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(YAMLISH)
def test_random_yaml_punctuation_never_crashes(text: str) -> None:
    _only_plan_invalid(text, "p.yaml")
    _only_plan_invalid("---\n" + text + "\n---\n## A\n```bash\nx\n```\n", "p.md")


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 200),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.sampled_from(["10m", "x y", "build", "compile", "stop", "all", "../up", "/abs"]),
)
KEYS = st.sampled_from(
    ["id", "run", "needs", "tasks", "phases", "retry", "on", "timeout", "validate", "env", "nmae"]
)
trees = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=25,
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees, st.sampled_from(["phases", "env", "defaults", "name"]))
def test_random_structures_in_a_plan_never_crash(tree: object, key: str) -> None:
    data = yaml.safe_load(GOOD)
    data[key] = tree
    data["phases"] = data["phases"] if key != "phases" else tree
    _only_plan_invalid(yaml.safe_dump(data), "p.yaml")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_in_a_file_never_raise_anything_else(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.yaml"
        path.write_bytes(raw)
        with contextlib.suppress(PlanInvalid):
            load_plan(path)
        assert os.path.exists(path)
