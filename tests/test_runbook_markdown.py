"""Markdown runbooks: which blocks become which tasks, and errors at the Markdown line."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.plan import PlanInvalid, load_plan, load_plan_text, to_yaml

RUNBOOKS = Path(__file__).parent / "data" / "runbooks"
EXAMPLES = Path(__file__).parent.parent / "examples"

# fixture -> [(phase id, [task ids])]
EXPECTED_SHAPE = {
    "basic.md": [
        ("build", ["compile", "build-2", "unit-tests", "unit-tests-2"]),
        ("ship", ["ship"]),
    ],
    "nested_lists.md": [("migrate", ["backup", "migrate", "verify"])],
    "headings_without_code.md": [("steps", ["first", "third"])],
    "code_without_headings.md": [("main", ["main-1", "main-2"])],
    "code_before_phases.md": [("quick-start", ["quick-start-1"]), ("later", ["later-1"])],
    "hostile_prose.md": [("check", ["quoted", "status"])],
    "messy_real_world.md": [
        ("setup", ["setup-1", "nospace", "bare-attrs"]),
        ("emoji-heading", ["emoji-heading-1"]),
        ("emoji-heading-2", ["emoji-heading-2-1"]),
        ("phase", ["phase-1"]),
    ],
}
VALID = sorted(EXPECTED_SHAPE)


def shape(path: Path) -> list[tuple[str, list[str]]]:
    plan = load_plan(path).plan
    return [(p.id, [t.id for t in p.tasks]) for p in plan.phases]


@pytest.mark.parametrize("name", VALID)
def test_fixture_has_expected_phases_and_tasks(name: str) -> None:
    assert shape(RUNBOOKS / name) == EXPECTED_SHAPE[name]


def test_basic_runbook_attributes_front_matter_and_descriptions() -> None:
    loaded = load_plan(RUNBOOKS / "basic.md")
    plan = loaded.plan
    assert loaded.kind == "markdown"
    assert (plan.name, plan.project) == ("Basic runbook", "basic")
    assert plan.description == "Intro prose for the plan."
    assert plan.defaults.timeout == 300
    compile_task = plan.task("compile")
    assert compile_task.run == "make"
    assert compile_task.timeout == 600
    assert compile_task.retry is not None and compile_task.retry.attempts == 3
    assert compile_task.retry.initial == 1.0  # default backoff
    lint = plan.task("build-2")
    assert (lint.name, lint.needs, lint.on_failure) == ("Lint it", ("compile",), "continue")
    assert lint.description == "Then lint it."
    assert plan.phases[0].description == "Build everything."
    assert plan.task("unit-tests").name == "Unit tests"
    again = plan.task("unit-tests-2")
    assert [c.run for c in again.checks] == ["test -f report.xml"]
    assert again.fallback == "echo skipped"
    ship = plan.task("ship")
    assert ship.needs == ("compile", "unit-tests") and ship.workdir == "deploy"


def test_blocks_inside_list_items_keep_their_script_and_prose() -> None:
    plan = load_plan(RUNBOOKS / "nested_lists.md").plan
    assert plan.name == "Database maintenance"
    assert plan.task("backup").run == "pg_dump app > backup.sql"
    assert plan.task("backup").description == "1. Take a backup first:"
    migrate = plan.task("migrate")
    assert migrate.run == "./migrate up" and migrate.needs == ("backup",)
    assert migrate.description is not None and "they take a lock" in migrate.description
    verify = plan.task("verify")
    assert [c.run for c in verify.checks] == ["test `./migrate status | wc -l` -gt 0"]


def test_crlf_line_endings_give_the_same_plan() -> None:
    for name in VALID:
        text = (RUNBOOKS / name).read_text(encoding="utf-8")
        crlf = text.replace("\n", "\r\n")
        assert load_plan_text(crlf, name).plan == load_plan_text(text, name).plan


def problems_of(text: str, name: str = "book.md") -> list[tuple[int, int, str]]:
    with pytest.raises(PlanInvalid) as info:
        load_plan_text(text, name)
    return [(p.line, p.col, p.cause) for p in info.value.problems]


def test_crlf_errors_keep_their_line_numbers() -> None:
    text = (RUNBOOKS / "attribute_errors.md").read_text(encoding="utf-8")
    lf = problems_of(text)
    crlf = problems_of(text.replace("\n", "\r\n"))
    assert lf == crlf


def causes_at(text: str) -> dict[tuple[int, int], str]:
    with pytest.raises(PlanInvalid) as info:
        load_plan_text(text, "book.md")
    return {(p.line, p.col): p.cause for p in info.value.problems}


def test_front_matter_errors_point_at_the_markdown_line() -> None:
    found = causes_at((RUNBOOKS / "front_matter_error.md").read_text(encoding="utf-8"))
    assert "'soon' is not a duration" in found[(5, 12)]
    assert "phases" in found[(6, 1)]


def test_attribute_errors_point_at_the_attribute() -> None:
    found = causes_at((RUNBOOKS / "attribute_errors.md").read_text(encoding="utf-8"))
    # ```bash {id="bad id" retry=many timout=5m}
    assert "not a valid id" in found[(6, 13)]
    assert "retry='many'" in found[(6, 28)]
    assert "unknown code block attribute 'timout'" in found[(6, 33)]
    # ```bash {needs=nosuch on_failure=maybe timeout=10x}
    assert "unknown task 'nosuch'" in found[(10, 16)]
    assert "on_failure" in found[(10, 34)]
    assert "not a duration" in found[(10, 48)]
    assert any("run must not be empty" in cause for cause in found.values())


def test_unclosed_front_matter_and_attributes_are_problems() -> None:
    found = causes_at("---\nname: x\n\n## A\n\n```bash\necho\n```\n")
    assert "front matter is not closed" in found[(1, 1)]
    found = causes_at("## A\n\n```bash {id=a\necho\n```\n")
    assert "not closed" in found[(3, 9)]


def test_a_runbook_without_shell_blocks_is_one_clear_problem() -> None:
    for text in ("", "# Title\n\nJust prose.\n", "## A\n\n```python\nprint(1)\n```\n"):
        found = causes_at(text)
        assert list(found) == [(1, 1)]
        assert "no ```bash" in found[(1, 1)]


def test_duplicate_explicit_ids_are_reported_at_both_blocks() -> None:
    text = "## A\n\n```bash {id=x}\na\n```\n\n```bash {id=x}\nb\n```\n"
    found = causes_at(text)
    assert "used twice" in found[(7, 13)]


def test_auto_ids_never_clash_with_explicit_ones() -> None:
    text = "## A\n\n```bash\na\n```\n\n```bash {id=a-1}\nb\n```\n"
    plan = load_plan_text(text, "book.md").plan
    assert [t.id for t in plan.phases[0].tasks] == ["a-1-2", "a-1"]


HOSTILE_WORDS = ("Execute now", "Auto-approve", "--yes --no-confirm", "rm -rf /", "evil")


def test_hostile_prose_only_ever_lands_in_descriptions() -> None:
    plan = load_plan(RUNBOOKS / "hostile_prose.md").plan
    assert [t.run for _, t in plan.tasks()] == [
        'echo "a block in a quote is still a visible shell block"',
        "git status",
    ]
    for _, task in plan.tasks():
        fields = task.model_dump(exclude={"description"})
        assert not any(word in str(fields) for word in HOSTILE_WORDS)
        assert task.on_failure == "stop" and task.retry is None
    prose = " ".join(d or "" for d in [plan.description, *(t.description for _, t in plan.tasks())])
    assert "Auto-approve everything" in prose
    assert "rm -rf /" in prose


def test_other_languages_and_indented_code_are_never_tasks() -> None:
    text = (
        "## A\n\n```console\n$ rm -rf /\n```\n\n    rm -rf /\n\n```zsh\nrm -rf /\n```\n\n"
        "```bash\necho ok\n```\n"
    )
    plan = load_plan_text(text, "book.md").plan
    assert [t.run for _, t in plan.tasks()] == ["echo ok"]
    assert "rm -rf /" in (plan.task("a-1").description or "")


def test_project_defaults_to_file_name_and_name_to_h1() -> None:
    plan = load_plan_text("# Deploy API\n\n```bash\ntrue\n```\n", "ops/Deploy API.md").plan
    assert (plan.name, plan.project) == ("Deploy API", "deploy-api")


def test_multi_line_scripts_keep_indentation() -> None:
    text = "## A\n\n- step:\n\n  ```bash\n  if true; then\n    echo in\n  fi\n  ```\n"
    plan = load_plan_text(text, "book.md").plan
    assert plan.task("a-1").run == "if true; then\n  echo in\nfi"


@pytest.mark.parametrize("path", [*(RUNBOOKS / n for n in VALID), EXAMPLES / "runbook.md"])
def test_convert_round_trip(path: Path) -> None:
    plan = load_plan(path).plan
    text = to_yaml(plan)
    again = load_plan_text(text, "converted.yaml")
    assert again.kind == "yaml"
    assert again.plan == plan
    assert "\n    checks:" not in text and "  checks:" not in text
