"""Pure parts of agent review: allowed paths, gates, prior rounds, plan syntax."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.actions.agent import (
    CommandResult,
    build_prior,
    fix_rounds_left,
    gate_commands,
    invocation,
    outside_allowed,
    quality_gate,
    shorten,
    spec_gate,
)
from vigil.actions.specs import AgentConfig, AgentSpec
from vigil.plan import PlanInvalid, load_plan_text
from vigil.safety import Redactor

segment = st.text(alphabet="abcxyz_.-", min_size=1, max_size=6).filter(
    lambda s: s not in (".", "..")
)
rel_path = st.lists(segment, min_size=1, max_size=4).map("/".join)


def test_allowed_paths_use_gitignore_globs() -> None:
    allowed = ["src/**", "tests/**", "!src/secrets/**", "*.md"]
    paths = ["src/a.py", "src/deep/b.py", "tests/t.py", "README.md", "docs/x.md", "setup.py"]
    paths += ["src/secrets/key.pem", "ci", "ci/deploy.yml", "src"]
    assert outside_allowed(paths, allowed) == ["ci/deploy.yml", "setup.py", "src/secrets/key.pem"]
    assert outside_allowed(paths, []) == []


@given(st.lists(rel_path, max_size=12))
def test_everything_under_an_allowed_prefix_passes(paths: list[str]) -> None:
    inside = [f"src/{p}" for p in paths]
    assert outside_allowed(inside, ["src/**"]) == []
    outside = outside_allowed([f"other/{p}" for p in paths], ["src/**"])
    # Every offending file is reported (directories only when nothing below them is).
    for p in paths:
        assert any(f"other/{p}" == o or f"other/{p}".startswith(o + "/") for o in outside) or any(
            o.startswith(f"other/{p}/") for o in outside
        )


def test_spec_gate_reports_paths_then_acceptance() -> None:
    bad = spec_gate(["src/a.py", "Makefile"], ["src/**"], [CommandResult("pytest", True, 0)])
    assert not bad.ok and bad.offending_paths == ("Makefile",) and "Makefile" in bad.reason
    failed = spec_gate(["src/a.py"], ["src/**"], [CommandResult("pytest -q", False, 1)])
    assert not failed.ok and failed.failed_command == "pytest -q"
    assert spec_gate(["src/a.py"], ["src/**"], [CommandResult("pytest", True, 0)]).ok
    assert not quality_gate(
        [CommandResult("ruff check", True, 0), CommandResult("mypy", False, 1)]
    ).ok
    assert quality_gate([]).ok


def test_gate_commands_keep_plan_order() -> None:
    spec = AgentSpec(command="x", prompt="p", acceptance=["a1", "a2"], quality="q1")
    assert [(g.kind, g.run) for g in gate_commands(spec)] == [
        ("acceptance", "a1"),
        ("acceptance", "a2"),
        ("quality", "q1"),
    ]


def test_fix_rounds_are_bounded() -> None:
    spec = AgentSpec(command="x", prompt="p", max_fix_rounds=2)
    assert [fix_rounds_left(spec, n) for n in (1, 2, 3)] == [True, True, False]
    assert not fix_rounds_left(AgentSpec(command="x", prompt="p", max_fix_rounds=0), 1)


@given(st.text(max_size=3000), st.integers(min_value=0, max_value=800))
def test_shorten_never_exceeds_the_limit_and_keeps_both_ends(text: str, limit: int) -> None:
    out = shorten(text, limit)
    assert len(out) <= limit or len(text) <= limit
    if len(text) <= limit:
        assert out == text
    elif limit >= 200:
        assert text.startswith(out[:10]) and text.endswith(out[-10:])


SECRET = "s3cr3t-V4lue-XYZ"


@given(st.text(max_size=400), st.text(max_size=400), st.integers(min_value=40, max_value=300))
def test_prior_never_shows_a_secret_even_when_cut(before: str, after: str, limit: int) -> None:
    prior = build_prior(
        2, f"deploy --token {SECRET}", before + SECRET + after, Redactor([SECRET]), limit
    )
    assert SECRET not in prior.output and SECRET not in prior.failed_command
    assert len(prior.output) <= max(limit, 0) or len(before + "***" + after) <= limit
    assert prior.attempt == 2


def test_invocation_passes_the_prompt_three_ways() -> None:
    stdin = invocation(AgentConfig(command="claude -p"), "do it", path="/tmp/p.md")
    assert stdin.argv == ["claude", "-p"] and stdin.stdin == b"do it"
    arg = invocation(AgentConfig(command="codex exec", pass_prompt="arg"), "do it", path="/tmp/p")
    assert arg.argv == ["codex", "exec", "do it"] and arg.stdin is None
    aider = AgentConfig(command="aider --message-file {prompt_file} --yes", pass_prompt="file")
    file = invocation(aider, "do it", path="/tmp/p.md")
    assert file.argv[-4:] == ["aider", "--message-file", "/tmp/p.md", "--yes"]
    assert file.env["VIGIL_PROMPT_FILE"] == "/tmp/p.md" and file.stdin == b"do it"


PLAN = "name: P\nproject: p\nphases:\n  - id: a\n    tasks:\n      - id: t\n{}"


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("", "is missing an action"),
        ("        run: make\n        llm: {prompt: hi}\n", "'run' and 'llm'"),
        ("        agent: {command: claude -p}\n", "exactly one of 'prompt' or 'prompt_file'"),
        ("        agent: {prompt: x}\n", "exactly one of 'command' or 'use'"),
        ("        agent: {command: a, prompt: x, pass_prompt: pipe}\n", "pass_prompt"),
        ("        llm: {prompt: x, apply: commit}\n", "apply"),
        ("        agent: {command: a, prompt: x, alowed_paths: [src]}\n", "allowed_paths"),
    ],
)
def test_plan_syntax_errors_are_clear(task: str, message: str) -> None:
    with pytest.raises(PlanInvalid) as caught:
        load_plan_text(PLAN.format(task), "plan.yaml")
    text = " ".join(f"{p.cause} {p.fix}" for p in caught.value.problems)
    assert message in text


def test_agent_and_llm_tasks_load() -> None:
    task = (
        "        agent: {use: claude, prompt: 'Fix {{ task.id }}', allowed_paths: src/**}\n"
        "      - id: ask\n        llm: {prompt: hi, apply: patch, max_tokens: 100}\n"
    )
    plan = load_plan_text(PLAN.format(task), "plan.yaml").plan
    agent = plan.task("t").agent
    assert agent is not None and agent.allowed_paths == ("src/**",) and agent.max_fix_rounds == 3
    llm = plan.task("ask").llm
    assert llm is not None and llm.apply == "patch" and llm.max_tries == 5
